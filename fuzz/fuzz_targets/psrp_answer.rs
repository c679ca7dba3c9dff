//! What a CAS sends back over remote PowerShell, layer by layer, as the client reads it: the
//! WS-Management answer envelope (`wsman::parse`), the PSRP fragments of its streams
//! (`Reassembler::feed`) and the messages they make (`Message::decode`), and a message's CLIXML
//! written as the REST JSON (`objects::write_json`) or read as a pipeline state. The first byte
//! picks the layer. Any bytes give a value or an error that says what is wrong, never a panic;
//! JSON the writer accepts a document for is JSON.
#![no_main]

use easgate::exchange::psrp::{objects, wsman};
use easgate_psrp::Message;
use easgate_psrp::fragment::Reassembler;
use easgate_psrp::messages;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&layer, body)) = data.split_first() else {
        return;
    };
    match layer % 4 {
        0 => {
            let Ok(text) = std::str::from_utf8(body) else {
                return;
            };
            match wsman::parse(text) {
                Ok(answer) => {
                    // The client feeds every stream of an answer to the pipeline's reassembler.
                    let mut inbox = Reassembler::default();
                    for s in &answer.streams {
                        if inbox.feed(&s.data).is_err() {
                            break;
                        }
                    }
                }
                Err(e) => assert!(!e.0.is_empty(), "an unreadable answer without a reason"),
            }
        }
        1 => {
            let mut inbox = Reassembler::default();
            // Two feeds: a message may span the streams of two answers.
            let (a, b) = body.split_at(body.len() / 2);
            for part in [a, b] {
                match inbox.feed(part) {
                    Ok(messages) => {
                        for m in messages {
                            if let Ok(m) = Message::decode(&m) {
                                let _ = m.text();
                            }
                        }
                    }
                    Err(e) => {
                        assert!(!e.to_string().is_empty());
                        break;
                    }
                }
            }
        }
        2 => {
            let Ok(text) = std::str::from_utf8(body) else {
                return;
            };
            let mut out = Vec::new();
            match objects::write_json(text, &mut out) {
                Ok(()) => {
                    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&out) {
                        panic!("write_json wrote what is not JSON ({e}): {out:?}");
                    }
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        _ => {
            let Ok(text) = std::str::from_utf8(body) else {
                return;
            };
            let _ = messages::parse_pipeline_state(text);
            let _ = easgate_psrp::ErrorRecord::parse(text);
        }
    }
});
