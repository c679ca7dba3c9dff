//! What reading a CAS's answers as text costs, for docs/benchmarks.md:
//!
//! `cargo bench -p easgate-psrp --bench text`
//!
//! A 100 000-device listing arrives as about 1.9 KB of CLIXML per device, inside envelopes
//! whose streams are base64. Both are ASCII, and both were read with the replacing UTF-8
//! decoder (`String::from_utf8_lossy`), which walks its input byte by byte: the message data
//! by [`Message::text`], the whole HTTP body by reqwest's `text()` (which also copies it). Now
//! the message is checked with `str::from_utf8` and borrowed, and the body is checked in place
//! (`String::from_utf8` on its bytes, `answer_text` in the connector). Each figure is the
//! median of 11 runs in this one process.

use std::hint::black_box;
use std::time::Instant;

use easgate_psrp::{Destination, Guid, Message, MessageType};

const DEVICES: usize = 100_000;
/// Devices per `Receive` answer.
const PER_ANSWER: usize = 100;

/// One listed device as Exchange writes it: a typed object with 30 string properties.
fn device_clixml() -> String {
    let mut s = String::from(
        r#"<Obj RefId="0"><TN RefId="0"><T>Deserialized.Microsoft.Exchange.Data.Directory.Management.MobileDevice</T><T>System.Object</T></TN><ToString>iPhone§ApplDNQXR4ZZHG7F</ToString><Props>"#,
    );
    // The identity and the name carry Exchange's `§` (not ASCII), as real listings do.
    for name in ["Identity", "Name"] {
        s.push_str(&format!(
            r#"<S N="{name}">contoso.com/Users/u04711/ExchangeActiveSyncDevices/iPhone§ApplDNQXR</S>"#
        ));
    }
    for i in 0..28 {
        s.push_str(&format!(
            r#"<S N="Property{i:02}">contoso.com/Users/u04711/ApplDNQXR{i}</S>"#
        ));
    }
    s.push_str("</Props></Obj>");
    s
}

fn median_ms(mut run: impl FnMut() -> usize) -> f64 {
    let mut times: Vec<f64> = (0..11)
        .map(|_| {
            let start = Instant::now();
            black_box(run());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[5]
}

fn main() {
    let clixml = device_clixml();
    let message = Message::new(
        Destination::Client,
        MessageType::PIPELINE_OUTPUT,
        Guid::NIL,
        Guid::NIL,
        clixml.as_bytes(),
    );
    println!(
        "{DEVICES} devices of {} bytes of CLIXML, answers of {PER_ANSWER} devices in base64",
        clixml.len()
    );

    let lossy = median_ms(|| {
        (0..DEVICES)
            .map(|_| String::from_utf8_lossy(&black_box(&message).data).len())
            .sum()
    });
    let now = median_ms(|| (0..DEVICES).map(|_| black_box(&message).text().len()).sum());
    println!(
        "message data as text: replacing decoder {lossy:.1} ms, Message::text {now:.1} ms ({:.3}×)",
        now / lossy
    );

    // An answer: 100 devices' messages in base64 (4/3 of their size, ASCII), read from an
    // owned body.
    let body: Vec<u8> = clixml
        .bytes()
        .filter(u8::is_ascii)
        .cycle()
        .take(clixml.len() * PER_ANSWER * 4 / 3)
        .collect();
    let answers = DEVICES / PER_ANSWER;
    let copied = median_ms(|| {
        (0..answers)
            .map(|_| {
                let bytes = black_box(body.clone());
                String::from_utf8_lossy(&bytes).into_owned().len()
            })
            .sum()
    });
    let in_place = median_ms(|| {
        (0..answers)
            .map(|_| {
                let bytes = black_box(body.clone());
                String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
                    .len()
            })
            .sum()
    });
    println!(
        "answer bodies as text: replaced and copied {copied:.1} ms, checked in place {in_place:.1} ms ({:.3}×; both include a copy of the body that stands for receiving it)",
        in_place / copied
    );
}
