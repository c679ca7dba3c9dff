//! `easgate sync`'s progress through the real binary: with stderr not a terminal (a pipe here,
//! as in a log or a CI job) it writes one plain line per stage with what the stage counted, then
//! the summary on stdout; `--json` keeps stdout one JSON object and stderr free of progress.

use std::time::Duration;

use crate::support::lab::{sync_lab, write_config_over};
use crate::support::{Transport, easgate_within, json_stdout, stderr, stdout, succeeded};

/// How long one `easgate` command may take.
const LIMIT: Duration = Duration::from_secs(120);

over_transports!(a_sync_without_a_terminal_prints_one_plain_line_per_stage);
async fn a_sync_without_a_terminal_prints_one_plain_line_per_stage(transport: Transport) {
    let lab = sync_lab(400).await;
    // Slow mailbox edits: the apply stage lasts long enough for several progress reports,
    // which must still come out as one line.
    lab.control()
        .set_latency(crate::support::slow_mailbox_edits(1, 5));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_over(&lab, dir.path(), 2, transport);
    let config = config.to_str().unwrap().to_owned();

    let out = easgate_within(LIMIT, &["sync", "--config", &config, "--full"]).await;
    let (text, progress) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}{progress}");
    assert!(
        !progress.contains('\x1b'),
        "escape codes in a pipe: {progress:?}"
    );
    let lines: Vec<&str> = progress.lines().collect();
    let stages: Vec<&str> = lines
        .iter()
        .map(|l| {
            l.strip_prefix("contoso: ")
                .and_then(|l| l.split(':').next())
                .unwrap_or_else(|| panic!("not a progress line: {l:?} in {progress}"))
        })
        .collect();
    assert_eq!(
        stages,
        ["discover", "decide", "plan and record", "apply"],
        "{progress}"
    );

    // Each line says what its stage counted, and the counts are the run's.
    let summary = text.lines().next().unwrap_or_default();
    assert!(summary.starts_with("contoso: run "), "{text}");
    let issued: u64 = text
        .split("Exchange commands issued ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no command count in {text}"));
    assert!(issued > 50, "{text}");
    assert!(
        lines[3].starts_with(&format!("contoso: apply: {issued}/{issued} commands, ")),
        "{progress}"
    );
    assert!(
        lines[1].starts_with("contoso: decide: 400/400 devices, "),
        "{progress}"
    );
    let pages: u64 = lines[0]
        .strip_prefix("contoso: discover: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no page count in {progress}"));
    // Devices, CAS mailboxes, mailboxes, organization settings and Intune: at least a page each.
    assert!(pages >= 5, "{progress}");
    assert!(lines.iter().all(|l| l.ends_with(" s")), "{progress}");

    // --json: stdout is the one summary object, stderr has no progress.
    let out = easgate_within(LIMIT, &["sync", "--config", &config, "--full", "--json"]).await;
    succeeded(&out);
    let summary = json_stdout(&out);
    assert_eq!(summary["commands_issued"], 0, "{summary}");
    assert_eq!(stderr(&out), "");
}

/// Starts `easgate ARGS`, waits until the lab saw `edits` mailbox edits, then sends SIGINT
/// (Ctrl-C) and returns what the process wrote and its exit status.
async fn interrupted_after_edits(
    lab: &easgate_lab::Lab,
    args: &[&str],
    edits: u64,
) -> std::process::Output {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_easgate"))
        .args(args)
        .env("EASGATE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("easgate starts");
    crate::support::within(LIMIT, async {
        while lab.control().counters().calls("Set-CASMailbox") < edits {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    crate::support::daemon::signal_process(child.id(), "INT");
    crate::support::within(
        LIMIT,
        tokio::task::spawn_blocking(move || child.wait_with_output().expect("easgate ends")),
    )
    .await
    .unwrap()
}

/// What must hold after `out`, a run stopped mid-apply by Ctrl-C: exit status 2 with `said`
/// on stderr, no remote PowerShell session left open, nothing sent after the stop, and work
/// still left (else the signal came too late to prove anything).
async fn stopped_cleanly(lab: &easgate_lab::Lab, out: &std::process::Output, said: &str) {
    let edits = lab.control().counters().calls("Set-CASMailbox");
    let message = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{message}");
    assert!(message.contains(said), "{message}");
    assert_eq!(
        lab.control().powershell_shells(),
        0,
        "sessions left open: {message}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lab.control().counters().calls("Set-CASMailbox"), edits);
    assert!(
        !crate::support::lab::mismatches(lab, crate::support::lab::expected).is_empty(),
        "the run finished before the signal ({edits} edits): the test proves nothing"
    );
}

over_transports!(ctrl_c_stops_the_approval_of_a_held_plan_mid_apply);
/// Ctrl-C while `easgate plan approve` applies a held plan: it stops sending, closes its
/// sessions, says so and exits 2.
async fn ctrl_c_stops_the_approval_of_a_held_plan_mid_apply(transport: Transport) {
    let lab = sync_lab(1_500).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_over(&lab, dir.path(), 2, transport);
    // The default guard: the first full sync restricts far more than 10 %.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "max_new_restrictions = { percent = 100.0, floor = 1000000 }",
        "",
    );
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap();
    let held = json_stdout(
        &easgate_within(LIMIT, &["sync", "--config", config, "--full", "--json"]).await,
    );
    assert_eq!(held["outcome"], "held", "{held}");
    let run = held["run"].as_i64().unwrap().to_string();
    lab.control()
        .set_latency(crate::support::slow_mailbox_edits(1, 20));
    let out =
        interrupted_after_edits(&lab, &["plan", "approve", &run, "--config", config], 20).await;
    stopped_cleanly(
        &lab,
        &out,
        &format!("applying run {run} stopped by a signal"),
    )
    .await;
}

over_transports!(ctrl_c_stops_a_sync_mid_apply_and_the_next_one_converges);
/// Ctrl-C in the middle of a sync's mailbox edits: it stops sending, closes its remote
/// PowerShell sessions, says what became of the run and exits 2; the next sync (a quick one
/// asked for) runs full and converges.
async fn ctrl_c_stops_a_sync_mid_apply_and_the_next_one_converges(transport: Transport) {
    let lab = sync_lab(1_500).await;
    lab.control()
        .set_latency(crate::support::slow_mailbox_edits(1, 20));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_over(&lab, dir.path(), 2, transport);
    let out = interrupted_after_edits(
        &lab,
        &["sync", "--full", "--config", config.to_str().unwrap()],
        20,
    )
    .await;
    stopped_cleanly(
        &lab,
        &out,
        "error: organization `contoso`: stopped by a signal",
    )
    .await;

    let out = easgate_within(LIMIT, &["sync", "--config", config.to_str().unwrap()]).await;
    let text = succeeded(&out);
    assert!(text.contains("full"), "the next sync runs full: {text}");
    crate::support::lab::assert_enforced(&lab, crate::support::lab::expected);
    assert_eq!(lab.control().powershell_shells(), 0);
}
