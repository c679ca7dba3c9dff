//! Service URLs and hosts: the shape checks, the loopback rule for plain HTTP, and how an
//! error message may show a URL.

/// Whether `host` (a name or an IP address, no port) is this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An absolute `http(s)://host…` URL.
pub(super) fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{}` is not an http:// or https:// URL", shown(url)))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("`{}` has no host", shown(url)));
    }
    Ok(())
}

/// `url` as an error message may show it: credentials in its authority (`user:password@`)
/// replaced, since configuration errors go to the terminal and the service's journal.
pub(super) fn shown(url: &str) -> String {
    if !has_userinfo(url) {
        return url.to_owned();
    }
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{scheme}[redacted]@{host}{path}")
}

/// `user[:password]@` in the authority of an http(s) URL.
pub(super) fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#'])
        .next()
        .is_some_and(|authority| authority.contains('@'))
}

/// Whether the host of an `http(s)://` URL is a loopback address (`localhost`, `127.x.y.z`,
/// `[::1]`): the one place plain HTTP can't be read by anybody else.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A service URL: absolute, no credentials in it, and TLS unless loopback or `insecure`.
pub(super) fn check_service_url(url: &str, insecure: bool) -> Result<(), String> {
    check_url(url)?;
    if has_userinfo(url) {
        return Err(format!(
            "`{}` carries credentials; they belong in the auth settings",
            shown(url)
        ));
    }
    if url.starts_with("http://") && !insecure && !is_loopback_url(url) {
        return Err(format!(
            "`{url}` is plain HTTP to a host other than loopback; use https:// or set \
             network.allow_insecure_http = true"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{FULL, parse};

    /// Found by the secrets review: a URL with `user:password@` in it was quoted whole in the
    /// error, and configuration errors end up in the service's journal.
    #[test]
    fn credentials_in_a_url_never_show_in_its_error() {
        let password = "Sup3r-s3cret";
        for (field, url) in [
            (
                "graph.graph_url",
                format!("https://app:{password}@graph.example.com/"),
            ),
            (
                "graph.login_url",
                format!("ftp://app:{password}@login.example.com"),
            ),
            (
                "exchange.cas_urls[0]",
                format!("http://ex:{password}@cas.example.com"),
            ),
            (
                "network.proxy.url",
                format!("socks5://u:{password}@proxy:1080"),
            ),
        ] {
            let text = match field {
                "network.proxy.url" => format!("[network]\nproxy = {{ url = \"{url}\" }}\n{FULL}"),
                "exchange.cas_urls[0]" => {
                    FULL.replacen("[\"http://127.0.0.1:8080\"]", &format!("[\"{url}\"]"), 1)
                }
                _ => {
                    let key = field.rsplit('.').next().unwrap();
                    FULL.replacen(
                        &format!("{key} = \"http://127.0.0.1:8081\""),
                        &format!("{key} = \"{url}\""),
                        1,
                    )
                }
            };
            assert!(
                text.contains(&url),
                "{field}: the test did not place the URL"
            );
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
            assert!(!err.contains(password), "{field}: {err}");
            assert!(err.contains("[redacted]@"), "{err}");
        }
        assert_eq!(
            shown("https://graph.example.com/v1"),
            "https://graph.example.com/v1"
        );
        assert_eq!(
            shown("https://a:b@c@graph.example.com/v1?x=1"),
            "https://[redacted]@graph.example.com/v1?x=1"
        );
    }

    #[test]
    fn loopback_urls() {
        for url in [
            "http://127.0.0.1:80",
            "http://localhost/x",
            "http://[::1]:8080",
            "http://127.8.9.1",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.1",
            "http://localhost.evil.com",
            "http://127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
}
