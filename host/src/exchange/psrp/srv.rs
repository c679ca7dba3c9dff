//! The realm's KDCs from DNS: the SRV records `_kerberos._tcp.<realm>` (RFC 4120 7.2.3.2), which
//! every Active Directory domain publishes for its domain controllers. One UDP query to the
//! system's first name server (`/etc/resolv.conf`); blocking, for the handshake's own thread.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// `host:port` of the realm's KDCs, best first (lowest priority, then highest weight).
pub fn kdcs(realm: &str, timeout: Duration) -> Result<Vec<String>, String> {
    let server = name_server()?;
    let name = format!("_kerberos._tcp.{}", realm.to_ascii_lowercase());
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let query = query(id, &name);
    let socket = UdpSocket::bind(if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    })
    .map_err(|e| format!("DNS: {e}"))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| format!("DNS: {e}"))?;
    socket
        .connect(server)
        .map_err(|e| format!("DNS {server}: {e}"))?;
    socket
        .send(&query)
        .map_err(|e| format!("DNS {server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .map_err(|e| format!("DNS {server}: no answer for {name}: {e}"))?;
    let mut records = answers(&buf[..n], id).map_err(|e| format!("DNS answer for {name}: {e}"))?;
    records.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    Ok(records
        .into_iter()
        .map(|(_, _, port, host)| format!("{host}:{port}"))
        .collect())
}

/// The first `nameserver` of `/etc/resolv.conf`.
fn name_server() -> Result<SocketAddr, String> {
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("reading /etc/resolv.conf: {e}"))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .ok_or_else(|| "no nameserver in /etc/resolv.conf".into())
}

/// A recursive query for the SRV records of `name`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&[0, 33, 0, 1]); // SRV, IN
    q
}

/// The SRV records of an answer: (priority, weight, port, target).
fn answers(msg: &[u8], id: u16) -> Result<Vec<(u16, u16, u16, String)>, String> {
    let u16_at = |i: usize| {
        msg.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or("cut short")
    };
    if u16_at(0)? != id {
        return Err("an answer to another query".into());
    }
    let rcode = msg[3] & 0x0f;
    if rcode == 3 {
        return Ok(Vec::new()); // no such name
    }
    if rcode != 0 {
        return Err(format!("the server answered rcode {rcode}"));
    }
    let (qd, an) = (u16_at(4)?, u16_at(6)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(msg, at)?;
        let (kind, len) = (u16_at(at)?, u16_at(at + 8)? as usize);
        let data = at + 10;
        if kind == 33 {
            let target = read_name(msg, data + 6)?;
            out.push((u16_at(data)?, u16_at(data + 2)?, u16_at(data + 4)?, target));
        }
        at = data + len;
    }
    Ok(out)
}

/// The offset after the name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, String> {
    loop {
        let len = *msg.get(at).ok_or("cut short")?;
        if len & 0xc0 == 0xc0 {
            return Ok(at + 2);
        }
        at += 1 + len as usize;
        if len == 0 {
            return Ok(at);
        }
    }
}

/// The name at `at`, following compression pointers (a bounded number of them).
fn read_name(msg: &[u8], mut at: usize) -> Result<String, String> {
    let mut labels = Vec::new();
    for _ in 0..64 {
        let len = *msg.get(at).ok_or("cut short")? as usize;
        if len & 0xc0 == 0xc0 {
            let low = *msg.get(at + 1).ok_or("cut short")? as usize;
            at = ((len & 0x3f) << 8) | low;
            continue;
        }
        if len == 0 {
            return Ok(labels.join("."));
        }
        let label = msg.get(at + 1..at + 1 + len).ok_or("cut short")?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        at += 1 + len;
    }
    Err("a name with a pointer loop".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as a server writes it: the question, then two SRV records whose targets are
    /// partly compressed against the question.
    fn answer(id: u16) -> Vec<u8> {
        let mut m = query(id, "_kerberos._tcp.contoso.com");
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 2; // two answers
        let record = |m: &mut Vec<u8>, prio: u16, weight: u16, target: &[u8]| {
            m.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 60]);
            let len = (6 + target.len()) as u16;
            m.extend_from_slice(&len.to_be_bytes());
            m.extend_from_slice(&prio.to_be_bytes());
            m.extend_from_slice(&weight.to_be_bytes());
            m.extend_from_slice(&88u16.to_be_bytes());
            m.extend_from_slice(target);
        };
        // dc02.contoso.com, "contoso.com" by a pointer into the question (offset 12 + 10 + 5).
        record(&mut m, 10, 100, b"\x04dc02\xc0\x1b");
        record(&mut m, 0, 100, b"\x04dc01\x07contoso\x03com\x00");
        m
    }

    #[test]
    fn srv_answers_are_read_with_compressed_names() {
        let mut r = answers(&answer(7), 7).unwrap();
        r.sort();
        assert_eq!(
            r,
            vec![
                (0, 100, 88, "dc01.contoso.com".to_owned()),
                (10, 100, 88, "dc02.contoso.com".to_owned()),
            ]
        );
        assert!(answers(&answer(7), 8).is_err(), "another query's answer");
        let mut nx = answer(7);
        nx[3] = 0x83;
        assert_eq!(answers(&nx, 7).unwrap(), vec![]);
        assert!(answers(&answer(7)[..40], 7).is_err());
    }
}
