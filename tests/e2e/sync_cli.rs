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
