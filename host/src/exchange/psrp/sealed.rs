//! WS-Management message encryption over HTTP (MS-WSMV 2.2.9.1): the body of a request or
//! answer sealed with the connection's security context.
//!
//! A sealed body is a `multipart/encrypted` document of two parts: the first names the
//! protocol (`application/HTTP-Kerberos-session-encrypted`) and the plain envelope's type and
//! length; the second is `application/octet-stream`: a little-endian `u32` length of the wrap
//! token's header, that header, then the sealed envelope (as long as the plain one, Windows'
//! layout), and the closing boundary right after it.
//!
//! This module only frames and unframes; the keys are [`super::kerberos`]'s.

/// The boundary WinRM uses.
const BOUNDARY: &str = "Encrypted Boundary";

/// The `protocol` of Kerberos session encryption (the scheme `Kerberos`).
pub const KERBEROS_PROTOCOL: &str = "application/HTTP-Kerberos-session-encrypted";

/// The `Content-Type` of a sealed body.
pub fn content_type(protocol: &str) -> String {
    format!("multipart/encrypted;protocol=\"{protocol}\";boundary=\"{BOUNDARY}\"")
}

/// Whether a `Content-Type` announces a sealed body.
pub fn is_sealed(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("multipart/encrypted"))
}

/// The body for an envelope of `plain_len` bytes sealed into `header` and `data`.
pub fn frame(protocol: &str, plain_len: usize, header: &[u8], data: &[u8]) -> Vec<u8> {
    let head = format!(
        "--{BOUNDARY}\r\n\tContent-Type: {protocol}\r\n\tOriginalContent: \
         type=application/soap+xml;charset=UTF-8;Length={plain_len}\r\n--{BOUNDARY}\r\n\t\
         Content-Type: application/octet-stream\r\n"
    );
    let tail = format!("--{BOUNDARY}--\r\n");
    let mut out = Vec::with_capacity(head.len() + 4 + header.len() + data.len() + tail.len());
    out.extend_from_slice(head.as_bytes());
    let hlen = u32::try_from(header.len()).expect("a wrap token header is a few dozen bytes");
    out.extend_from_slice(&hlen.to_le_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out.extend_from_slice(tail.as_bytes());
    out
}

/// A sealed body taken apart: the plain envelope's announced length, the wrap token's header
/// and the sealed data.
#[derive(Debug, PartialEq, Eq)]
pub struct Framed<'a> {
    pub plain_len: usize,
    pub header: &'a [u8],
    pub data: &'a [u8],
}

/// Takes a sealed body apart (see the module doc); why not, if it is not one.
pub fn unframe(body: &[u8]) -> Result<Framed<'_>, String> {
    let open = format!("--{BOUNDARY}\r\n");
    let close = format!("--{BOUNDARY}--");
    let first = find(body, open.as_bytes(), 0).ok_or("no opening boundary")?;
    let second = find(body, open.as_bytes(), first + open.len())
        .ok_or("no second part after the first boundary")?;
    let headers = String::from_utf8_lossy(&body[first + open.len()..second]);
    let plain_len = headers
        .split([';', '\r', '\n'])
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .ok_or("no Length in the OriginalContent header")?;
    let octets = b"application/octet-stream\r\n";
    let start =
        find(body, octets, second).ok_or("no application/octet-stream part")? + octets.len();
    let payload = body.get(start..).unwrap_or_default();
    let hlen: [u8; 4] = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or("no header length")?;
    let hlen = u32::from_le_bytes(hlen) as usize;
    let header = payload
        .get(4..4 + hlen)
        .ok_or("the header length runs past the body")?;
    // The sealed data is exactly as long as the plain envelope; the closing boundary follows.
    let data = payload
        .get(4 + hlen..4 + hlen + plain_len)
        .ok_or("the sealed data is shorter than OriginalContent's Length")?;
    if !payload[4 + hlen + plain_len..].starts_with(close.as_bytes()) {
        return Err("no closing boundary right after the sealed data".into());
    }
    Ok(Framed {
        plain_len,
        header,
        data,
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_body_comes_apart_into_what_went_in() {
        let header = [7u8; 60];
        // Sealed bytes may hold anything, a boundary's first bytes included.
        let data = b"--Encrypted Bo\x00\xff\r\n--sealed".to_vec();
        let body = frame(KERBEROS_PROTOCOL, data.len(), &header, &data);
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(
            "--Encrypted Boundary\r\n\tContent-Type: application/HTTP-Kerberos-session-encrypted\r\n\
             \tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=26\r\n\
             --Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n<\0\0\0"
        ));
        assert!(body.ends_with(b"--sealed--Encrypted Boundary--\r\n"));
        let f = unframe(&body).expect("well framed");
        assert_eq!(
            f,
            Framed {
                plain_len: data.len(),
                header: &header,
                data: &data
            }
        );
    }

    #[test]
    fn a_body_that_is_not_sealed_or_is_cut_short_is_refused_with_the_reason() {
        assert_eq!(
            unframe(b"<s:Envelope/>").unwrap_err(),
            "no opening boundary"
        );
        let body = frame(KERBEROS_PROTOCOL, 10, &[1; 16], &[2; 10]);
        let cut = &body[..body.len() - 25];
        assert_eq!(
            unframe(cut).unwrap_err(),
            "the sealed data is shorter than OriginalContent's Length"
        );
        let mut long = frame(KERBEROS_PROTOCOL, 10, &[1; 16], &[2; 11]);
        assert_eq!(
            unframe(&long).unwrap_err(),
            "no closing boundary right after the sealed data"
        );
        // A header length past the end.
        let at = long.windows(4).position(|w| w == [16, 0, 0, 0]).unwrap();
        long[at] = 0xff;
        long[at + 1] = 0xff;
        assert_eq!(
            unframe(&long).unwrap_err(),
            "the header length runs past the body"
        );
    }

    #[test]
    fn the_content_type_names_the_protocol_and_boundary() {
        let ct = content_type(KERBEROS_PROTOCOL);
        assert_eq!(
            ct,
            "multipart/encrypted;protocol=\"application/HTTP-Kerberos-session-encrypted\";\
             boundary=\"Encrypted Boundary\""
        );
        assert!(is_sealed(&ct));
        assert!(!is_sealed("application/soap+xml;charset=UTF-8"));
    }
}
