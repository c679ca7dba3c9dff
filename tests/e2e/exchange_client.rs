//! The Exchange client against the lab over HTTP: paging, CAS discovery and failover, return to
//! the primary, failover off, all CAS down, throttling with adaptive concurrency, token renewal.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use easgate::exchange::cmdlets::{
    GetCasMailbox, GetMailbox, GetMobileDevice, HashTableEdit, SetCasMailbox,
};
use easgate::exchange::{ExchangeClient, ExchangeError};
use easgate_lab::{CmdletLatency, LatencyModel};

use crate::support::{client_lab, lab_organization, test_http, within};

fn set_latency(lab: &easgate_lab::Lab, cmdlet: &str, base_ms: u64) {
    let mut m = LatencyModel::default();
    m.cmdlets.insert(
        cmdlet.into(),
        CmdletLatency {
            base_ms,
            per_object_us: 0,
        },
    );
    lab.control().set_latency(m);
}

/// One `Set-CASMailbox` per mailbox adding `tag-<alias>` to its allow list.
fn add_one_each(mailboxes: &[String], tag: &str) -> Vec<SetCasMailbox> {
    mailboxes
        .iter()
        .map(|m| SetCasMailbox {
            identity: m.clone(),
            allowed: Some(HashTableEdit::new(vec![format!("{tag}-{m}")], vec![])),
            blocked: None,
        })
        .collect()
}

async fn allow_lists(c: &ExchangeClient) -> BTreeMap<String, Vec<String>> {
    c.run(&GetCasMailbox::default())
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.identity, m.active_sync_allowed_device_ids))
        .collect()
}

/// Waits until the client sends to the primary again (its background probe succeeded).
async fn back_on_primary(lab: &easgate_lab::Lab, c: &ExchangeClient) {
    within(Duration::from_secs(10), async {
        loop {
            let before = lab.control().counters().exchange.by_cas[0];
            c.run(&GetCasMailbox {
                identity: None,
                result_size: easgate::exchange::cmdlets::ResultSize::Limit(1),
                filter: None,
            })
            .await
            .unwrap();
            if c.cas_health()[0].up && lab.control().counters().exchange.by_cas[0] > before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn lists_every_device_page_by_page_and_discovers_the_other_cas() {
    let lab = client_lab(1500, 3).await;
    let mut org = lab_organization(&lab);
    // Only the primary is configured: the other two are found with Get-ClientAccessService.
    org.exchange.cas_urls.truncate(1);
    let c = ExchangeClient::builder(&org, &test_http())
        .page_size(200)
        .build()
        .unwrap();
    let devices = within(Duration::from_secs(30), c.run(&GetMobileDevice::default()))
        .await
        .unwrap();
    let truth = lab.control().truth();
    assert_eq!(devices.len(), truth.len());
    let ids: HashSet<&str> = devices.iter().map(|d| d.device_id.as_str()).collect();
    assert_eq!(ids.len(), truth.len(), "no device twice");
    for t in &truth {
        assert!(
            ids.contains(t.device_id.as_str()),
            "{} missing",
            t.device_id
        );
    }
    let pages = lab.control().counters().calls("Get-MobileDevice");
    assert_eq!(pages, truth.len().div_ceil(200) as u64);
    let known: Vec<String> = c.cas_health().into_iter().map(|h| h.url).collect();
    assert_eq!(
        known,
        lab.cas_urls(),
        "discovered CAS 2 and 3 after the primary"
    );

    // Every request carried the module's client headers (the lab refuses an X-CmdletName
    // that disagrees with the body, so each named its own cmdlet).
    let exchange = lab.control().counters().exchange;
    let sent = |key: &str| exchange.client_headers.get(key).copied().unwrap_or(0);
    let anchor = format!(
        "X-AnchorMailbox: APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{}",
        org.exchange.tenant_id
    );
    assert_eq!(
        sent(&anchor),
        exchange.commands,
        "{:?}",
        exchange.client_headers
    );
    assert_eq!(sent("X-CmdletName: Get-MobileDevice"), pages);
    assert_eq!(sent("X-ResponseFormat: json"), exchange.commands);
    assert_eq!(
        sent(&format!(
            "X-ClientApplication: easgate/{}",
            env!("CARGO_PKG_VERSION")
        )),
        exchange.commands
    );
    assert_eq!(exchange.rejected, 0);
}

#[tokio::test]
async fn primary_stopped_mid_listing_completes_on_another_cas_then_returns() {
    let lab = client_lab(3000, 3).await;
    set_latency(&lab, "Get-MobileDevice", 60);
    let mut org = lab_organization(&lab);
    org.exchange.probe_interval = Duration::from_millis(200);
    let c = ExchangeClient::builder(&org, &test_http())
        .page_size(100)
        .build()
        .unwrap();
    let listing = tokio::spawn({
        let c = c.clone();
        async move { c.run(&GetMobileDevice::default()).await }
    });
    // 30 pages of 60 ms: stop the primary a third of the way.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let served_before_stop = lab.control().counters().exchange.by_cas[0];
    lab.control().stop_cas(0).await.unwrap();
    let devices = within(Duration::from_secs(30), listing)
        .await
        .unwrap()
        .unwrap();

    let ids: HashSet<String> = devices.iter().map(|d| d.device_id.clone()).collect();
    assert_eq!(devices.len(), 3000, "nothing lost");
    assert_eq!(ids.len(), 3000, "nothing twice");
    let counters = lab.control().counters().exchange;
    assert!(
        served_before_stop >= 3,
        "the primary served the first pages"
    );
    assert!(
        counters.by_cas[1] + counters.by_cas[2] >= 10,
        "{:?}",
        counters.by_cas
    );
    assert!(!c.cas_health()[0].up);

    lab.control().start_cas(0).await.unwrap();
    back_on_primary(&lab, &c).await;
}

#[tokio::test]
async fn primary_stopped_mid_batch_of_writes_applies_each_exactly_once() {
    let lab = client_lab(600, 2).await;
    set_latency(&lab, "Set-CASMailbox", 40);
    let mut org = lab_organization(&lab);
    org.exchange.parallel_commands = 4;
    org.exchange.probe_interval = Duration::from_millis(200);
    let c = ExchangeClient::builder(&org, &test_http()).build().unwrap();
    let before = allow_lists(&c).await;
    let mailboxes: Vec<String> = before.keys().cloned().collect();
    assert!(mailboxes.len() >= 200);

    let batch = tokio::spawn({
        let c = c.clone();
        let commands = add_one_each(&mailboxes, "FAILOVER");
        async move { c.run_all(commands).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    lab.control().stop_cas(0).await.unwrap();
    let results = within(Duration::from_secs(60), batch).await.unwrap();
    for (m, r) in mailboxes.iter().zip(&results) {
        assert!(r.is_ok(), "{m}: {:?}", r.as_ref().err());
    }

    // Each mailbox: the list it had plus its one new id — none lost, none doubled, no other change.
    let after = allow_lists(&c).await;
    for m in &mailboxes {
        let mut want = before[m].clone();
        want.push(format!("FAILOVER-{m}"));
        assert_eq!(after[m], want, "{m}");
    }
    let by_cas = lab.control().counters().exchange.by_cas;
    assert!(by_cas[0] > 0 && by_cas[1] > 0, "{by_cas:?}");

    lab.control().start_cas(0).await.unwrap();
    back_on_primary(&lab, &c).await;
}

#[tokio::test]
async fn all_cas_down_fails_with_a_clear_error_within_the_timeout() {
    let lab = client_lab(50, 2).await;
    let mut org = lab_organization(&lab);
    org.exchange.unavailable_timeout = Duration::from_millis(1500);
    org.exchange.probe_interval = Duration::from_millis(100);
    let c = ExchangeClient::builder(&org, &test_http()).build().unwrap();
    c.run(&GetCasMailbox::default()).await.unwrap();
    lab.control().stop_cas(0).await.unwrap();
    lab.control().stop_cas(1).await.unwrap();

    let started = Instant::now();
    let e = within(Duration::from_secs(10), c.run(&GetMobileDevice::default()))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let ExchangeError::Unavailable {
        tried, failover, ..
    } = &e
    else {
        panic!("{e}");
    };
    assert!(*failover);
    assert_eq!(*tried, lab.cas_urls());
    let text = e.to_string();
    assert!(
        text.starts_with("Get-MobileDevice: no Client Access Server answered"),
        "{text}"
    );
    assert!(text.contains("cannot connect"), "{text}");
}

/// Regression (hostile run, hole 11): with every CAS taking connections and never answering,
/// the failure came after twice `unavailable_timeout` (the first attempt's request timeout was
/// not counted, and the last attempt ran past the deadline).
#[tokio::test]
async fn servers_that_never_answer_fail_within_the_unavailable_timeout() {
    let lab = client_lab(50, 2).await;
    let mut org = lab_organization(&lab);
    org.exchange.unavailable_timeout = Duration::from_millis(2000);
    org.exchange.probe_interval = Duration::from_millis(100);
    let http = easgate::net::HttpSettings {
        request_timeout: Duration::from_millis(1500),
        ..test_http()
    };
    let c = ExchangeClient::builder(&org, &http).build().unwrap();
    c.run(&GetCasMailbox::default()).await.unwrap();
    lab.control().slow_cas(0, Duration::from_secs(30)).unwrap();
    lab.control().slow_cas(1, Duration::from_secs(30)).unwrap();

    let started = Instant::now();
    let e = within(Duration::from_secs(20), c.run(&GetMobileDevice::default()))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, ExchangeError::Unavailable { .. }), "{e}");
    // Before: about 3.5 s (the first 1.5 s wait uncounted, then attempts past the deadline).
    assert!(
        took >= Duration::from_millis(2000) && took < Duration::from_millis(2900),
        "{took:?}"
    );
}

/// Regression: `Get-Mailbox` went out without parameters after the move to typed ones, so a
/// listing stopped at Exchange's default 1000 and a lookup by identity read those 1000 too.
#[tokio::test]
async fn mailboxes_are_listed_whole_and_looked_up_one_by_one() {
    let lab = client_lab(2600, 1).await;
    let org = lab_organization(&lab);
    let c = ExchangeClient::builder(&org, &test_http()).build().unwrap();
    let all = within(Duration::from_secs(30), c.run(&GetMailbox::default()))
        .await
        .unwrap();
    let mailboxes = lab.control().info().mailboxes;
    assert!(mailboxes > 1000, "the lab has {mailboxes} mailboxes");
    assert_eq!(all.len(), mailboxes);
    let one = GetMailbox {
        identity: Some(all[1234].identity.clone()),
        ..Default::default()
    };
    let found = within(Duration::from_secs(30), c.run(&one)).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].identity, all[1234].identity);
}

#[tokio::test]
async fn with_failover_off_a_dead_primary_fails_and_the_others_are_not_used() {
    let lab = client_lab(50, 2).await;
    let mut org = lab_organization(&lab);
    org.exchange.cas_failover = false;
    org.exchange.unavailable_timeout = Duration::from_millis(500);
    let c = ExchangeClient::builder(&org, &test_http()).build().unwrap();
    lab.control().stop_cas(0).await.unwrap();
    let e = within(Duration::from_secs(10), c.run(&GetCasMailbox::default()))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("cas_failover is off"), "{text}");
    assert!(text.contains(&lab.cas_urls()[0]), "{text}");
    assert_eq!(lab.control().counters().exchange.by_cas[1], 0);
    assert_eq!(c.cas_health().len(), 2, "no discovery with failover off");
}

#[tokio::test]
async fn a_failing_cas_503_fails_over_too() {
    let lab = client_lab(50, 2).await;
    let org = lab_organization(&lab);
    let c = ExchangeClient::builder(&org, &test_http()).build().unwrap();
    lab.control().fail_cas(0, 503).unwrap();
    let boxes = within(Duration::from_secs(10), c.run(&GetCasMailbox::default()))
        .await
        .unwrap();
    assert!(!boxes.is_empty());
    assert!(!c.cas_health()[0].up);
    assert!(lab.control().counters().exchange.faulted >= 1);
}

#[tokio::test]
async fn a_cas_slower_than_the_request_timeout_fails_over() {
    let lab = client_lab(50, 2).await;
    let org = lab_organization(&lab);
    let http = easgate::net::HttpSettings {
        request_timeout: Duration::from_millis(500),
        ..test_http()
    };
    let c = ExchangeClient::builder(&org, &http).build().unwrap();
    c.run(&GetCasMailbox::default()).await.unwrap();
    lab.control().slow_cas(0, Duration::from_secs(3)).unwrap();
    let started = Instant::now();
    let boxes = within(Duration::from_secs(10), c.run(&GetCasMailbox::default()))
        .await
        .unwrap();
    assert!(!boxes.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "did not wait out the slow CAS"
    );
    assert!(!c.cas_health()[0].up);
    assert!(lab.control().counters().exchange.by_cas[1] >= 1);
}

#[tokio::test]
async fn sixteen_asked_against_a_limit_of_four_completes_within_the_limit() {
    let lab = client_lab(400, 2).await;
    lab.control().set_exchange_concurrency(4);
    set_latency(&lab, "Set-CASMailbox", 100);
    let mut org = lab_organization(&lab);
    org.exchange.parallel_commands = 16;
    let c = ExchangeClient::builder(&org, &test_http()).build().unwrap();
    let mailboxes: Vec<String> = allow_lists(&c).await.into_keys().take(120).collect();
    lab.control().reset_counters();

    let started = Instant::now();
    let results = within(
        Duration::from_secs(60),
        c.run_all(add_one_each(&mailboxes, "THROTTLE")),
    )
    .await;
    let took = started.elapsed();
    assert!(results.iter().all(Result::is_ok));
    let x = lab.control().counters().exchange;
    assert!(x.throttled > 0, "16 at once against 4 was throttled");
    assert_eq!(
        x.peak_in_flight, 4,
        "the lab admitted at most its limit, and all of it"
    );
    assert_eq!(
        x.by_cmdlet["Set-CASMailbox"].calls, 120,
        "each command applied once"
    );
    assert_eq!(x.by_cmdlet["Set-CASMailbox"].errors, 0);
    assert!(c.effective_concurrency() < 16, "the client backed off");
    // 120 × 100 ms over 4 slots is 3 s; throttling waits (Retry-After: 1 s) add a little.
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[tokio::test]
async fn an_expiring_exchange_token_is_renewed_mid_listing() {
    let lab = client_lab(2000, 1).await;
    lab.control().set_token_lifetime(Duration::from_secs(1));
    set_latency(&lab, "Get-MobileDevice", 150);
    let org = lab_organization(&lab);
    let c = ExchangeClient::builder(&org, &test_http())
        .page_size(100)
        .build()
        .unwrap();
    let devices = within(Duration::from_secs(30), c.run(&GetMobileDevice::default()))
        .await
        .unwrap();
    assert_eq!(devices.len(), 2000);
    let counters = lab.control().counters();
    assert!(
        counters.graph.tokens_issued >= 3,
        "{}",
        counters.graph.tokens_issued
    );
    assert_eq!(
        counters.exchange.rejected, 0,
        "renewed before expiry, never refused"
    );
}

/// The lab answers refusals in Exchange Online's shape (`Ex6F9304|<exception>|<text>` under a
/// generic "Error executing cmdlet"): the client must still class them, or an add repeated after
/// a lost answer would fail the run and a removal of a gone object would not count as done.
#[tokio::test]
async fn refusals_in_exchange_onlines_shape_keep_their_class() {
    let lab = client_lab(20, 1).await;
    let c = ExchangeClient::builder(&lab_organization(&lab), &test_http())
        .build()
        .unwrap();
    let mailbox = c.run(&GetMailbox::default()).await.unwrap()[0]
        .identity
        .clone();
    let add = SetCasMailbox {
        identity: mailbox.clone(),
        allowed: Some(HashTableEdit::new(vec!["RESTREPEAT1".into()], vec![])),
        blocked: None,
    };
    c.run(&add).await.unwrap();
    let again = c.run(&add).await.expect_err("already present");
    assert!(again.is_repeat_of_applied(), "{again}");
    let ExchangeError::Cmdlet(f) = &again else {
        panic!("{again}")
    };
    assert_eq!(f.exception, "System.InvalidOperationException");
    assert!(f.message.contains("is already present"), "{f}");
    assert!(
        !again.to_string().contains("Error executing cmdlet"),
        "{again}"
    );

    let missing = c
        .run(&SetCasMailbox {
            identity: "nobody-at-all".into(),
            allowed: Some(HashTableEdit::new(vec!["X".into()], vec![])),
            blocked: None,
        })
        .await
        .expect_err("no such mailbox");
    assert!(missing.is_not_found(), "{missing}");
    let ExchangeError::Cmdlet(f) = &missing else {
        panic!("{missing}")
    };
    assert_eq!(
        f.exception,
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
    );
    assert!(f.message.contains("'nobody-at-all'"), "{f}");
}
