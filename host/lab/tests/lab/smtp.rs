//! The mail sink accepts mail on loopback and lets tests read the raw message.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::lab;

struct Session {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Session {
    async fn open(addr: std::net::SocketAddr) -> Session {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut s = Session {
            reader: BufReader::new(r),
            writer: w,
        };
        assert!(s.reply().await.starts_with("220 "));
        s
    }

    /// Reads one (possibly multi-line) reply.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    async fn send(&mut self, text: &str) -> String {
        self.writer.write_all(text.as_bytes()).await.unwrap();
        self.reply().await
    }
}

#[tokio::test]
async fn accepts_mail_and_keeps_it_raw() {
    let lab = lab(10).await;
    let mut s = Session::open(lab.smtp_addr()).await;
    assert!(
        s.send("RCPT TO:<x@contoso.com>\r\n")
            .await
            .starts_with("503"),
        "order is enforced"
    );
    assert!(s.send("EHLO connector.test\r\n").await.contains("250 SIZE"));
    assert!(s.send("DATA\r\n").await.starts_with("503"));
    assert!(
        s.send("MAIL FROM:<noreply@contoso.com> SIZE=200\r\n")
            .await
            .starts_with("250")
    );
    assert!(
        s.send("RCPT TO:<adele@contoso.com>\r\n")
            .await
            .starts_with("250")
    );
    assert!(
        s.send("RCPT TO:<helpdesk@contoso.com>\r\n")
            .await
            .starts_with("250")
    );
    assert!(s.send("DATA\r\n").await.starts_with("354"));
    let message = "From: noreply@contoso.com\r\nTo: adele@contoso.com\r\nSubject: Your phone\r\n was blocked\r\n\r\nHello\r\n..a line starting with a dot\r\n.\r\n";
    assert!(s.send(message).await.starts_with("250"));
    assert!(s.send("QUIT\r\n").await.starts_with("221"));

    let mails = tokio::time::timeout(Duration::from_secs(10), lab.control().wait_for_mails(1))
        .await
        .unwrap();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m.from, "noreply@contoso.com");
    assert_eq!(m.to, ["adele@contoso.com", "helpdesk@contoso.com"]);
    assert_eq!(
        m.header("Subject").as_deref(),
        Some("Your phone was blocked")
    );
    assert_eq!(m.body(), "Hello\r\n.a line starting with a dot\r\n");
    assert_eq!(lab.control().counters().mails, 1);

    // The same mail over the control API.
    let over_http: Vec<easgate_lab::ReceivedMail> =
        reqwest::get(format!("{}/_lab/mail", lab.control_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(&over_http[0], m);
    lab.control().clear_mails();
    assert!(lab.control().mails().is_empty());
}

#[tokio::test]
async fn refuses_listed_recipients_and_can_be_stopped_and_started() {
    let lab = lab(10).await;
    lab.control().set_smtp_rules(easgate_lab::SmtpRules {
        reject: vec!["Gone@contoso.com".into()],
        defer: vec!["busy@contoso.com".into()],
        refuse_senders: vec!["spoofed@contoso.com".into()],
        auth: None,
    });
    let mut s = Session::open(lab.smtp_addr()).await;
    s.send("EHLO connector.test\r\n").await;
    assert!(
        s.send("MAIL FROM:<spoofed@contoso.com>\r\n")
            .await
            .starts_with("550 5.7.1")
    );
    assert!(
        s.send("RCPT TO:<adele@contoso.com>\r\n")
            .await
            .starts_with("503")
    );
    s.send("MAIL FROM:<noreply@contoso.com>\r\n").await;
    assert!(
        s.send("RCPT TO:<gone@contoso.com>\r\n")
            .await
            .starts_with("550 5.1.1"),
        "rejected for good, whatever the case"
    );
    assert!(
        s.send("RCPT TO:<busy@contoso.com>\r\n")
            .await
            .starts_with("450 4.2.1")
    );
    assert!(
        s.send("DATA\r\n").await.starts_with("503"),
        "no recipient was accepted"
    );
    assert!(
        s.send("RCPT TO:<adele@contoso.com>\r\n")
            .await
            .starts_with("250")
    );
    s.send("QUIT\r\n").await;

    // The rules over the control API.
    let http = reqwest::Client::new();
    let url = format!("{}/_lab/smtp", lab.control_url());
    let rules: easgate_lab::SmtpRules = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(rules.reject, ["Gone@contoso.com"]);
    let put = http
        .put(&url)
        .json(&serde_json::json!({"reject": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    assert_eq!(
        lab.control().smtp_rules(),
        easgate_lab::SmtpRules::default()
    );

    // Stopped: the port refuses connections; started again: it accepts on the same port.
    let stop = http.post(format!("{url}/stop")).send().await.unwrap();
    assert_eq!(stop.status(), 204);
    let refused = TcpStream::connect(lab.smtp_addr()).await;
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    lab.control().start_smtp().await.unwrap();
    let mut s = Session::open(lab.smtp_addr()).await;
    assert!(s.send("NOOP\r\n").await.starts_with("250"));
    lab.shutdown().await;
}

#[tokio::test]
async fn demands_auth_plain_when_told() {
    let lab = lab(10).await;
    lab.control().set_smtp_rules(easgate_lab::SmtpRules {
        auth: Some(easgate_lab::SmtpAuth {
            username: "easgate".into(),
            password: "s3cret".into(),
        }),
        ..Default::default()
    });
    let mut s = Session::open(lab.smtp_addr()).await;
    assert!(
        s.send("EHLO connector.test\r\n")
            .await
            .contains("250-AUTH PLAIN")
    );
    assert!(
        s.send("MAIL FROM:<noreply@contoso.com>\r\n")
            .await
            .starts_with("530 5.7.0")
    );
    // "\0easgate\0wrong", then "\0easgate\0s3cret".
    assert!(
        s.send("AUTH PLAIN AGVhc2dhdGUAd3Jvbmc=\r\n")
            .await
            .starts_with("535 5.7.8")
    );
    assert!(
        s.send("AUTH PLAIN AGVhc2dhdGUAczNjcmV0\r\n")
            .await
            .starts_with("235")
    );
    assert!(
        s.send("MAIL FROM:<noreply@contoso.com>\r\n")
            .await
            .starts_with("250")
    );
    lab.control()
        .set_smtp_rules(easgate_lab::SmtpRules::default());
    let mut s = Session::open(lab.smtp_addr()).await;
    assert!(!s.send("EHLO connector.test\r\n").await.contains("AUTH"));
    assert!(
        s.send("AUTH PLAIN AGVhc2dhdGUAczNjcmV0\r\n")
            .await
            .starts_with("502")
    );
    lab.shutdown().await;
}
