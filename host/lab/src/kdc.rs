//! A real MIT Kerberos KDC for tests: `TestKdc::start(dir)` makes a realm in `dir`, runs
//! `krb5kdc` on a free loopback port, and stops it when dropped.
//!
//! What a test gets:
//! - the realm [`REALM`] (`LAB.EASGATE.TEST`) and the KDC's address (`127.0.0.1:PORT`, UDP and
//!   TCP on the same port);
//! - a `krb5.conf` that points at that KDC only (no DNS lookups, no reverse DNS, no hostname
//!   canonicalization), for `KRB5_CONFIG`;
//! - a keytab holding `HTTP/localhost@LAB.EASGATE.TEST`, the service principal of the lab's CAS
//!   faces (a client asks for the SPN `HTTP/localhost`), for `KRB5_KTNAME` of an acceptor;
//! - a user principal `svc-easgate@LAB.EASGATE.TEST` with a password, the account a connector
//!   or pypsrp logs in with.
//!
//! The tools come from Debian's `krb5-kdc`, `krb5-admin-server` and `krb5-user`
//! (`.ci/install-kerberos` installs them); [`TestKdc::missing_tools`] says what is absent so a
//! test can skip with that message.
//!
//! ```no_run
//! # fn demo() -> Result<(), easgate_lab::kdc::KdcError> {
//! let dir = std::env::temp_dir().join("kdc-demo");
//! let kdc = easgate_lab::kdc::TestKdc::start(&dir)?;
//! println!("{} at {}, krb5.conf {}", kdc.realm(), kdc.kdc_addr(), kdc.krb5_conf().display());
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The realm every test KDC serves.
pub const REALM: &str = "LAB.EASGATE.TEST";
/// The host part of the service principal: clients reach the lab at `localhost`.
pub const SERVICE_HOST: &str = "localhost";
/// The user principal's name within [`REALM`]: the lab's PowerShell service account's local part.
pub const USER: &str = "svc-easgate";

/// The programs a realm needs: `kdb5_util` and `kadmin.local` make it, `krb5kdc` serves it.
const TOOLS: [&str; 3] = ["kdb5_util", "kadmin.local", "krb5kdc"];

/// Why a test KDC could not start.
#[derive(Debug, thiserror::Error)]
pub enum KdcError {
    /// A program of MIT Kerberos is not installed.
    #[error("{0} (install krb5-kdc, krb5-admin-server and krb5-user: .ci/install-kerberos)")]
    MissingTool(String),
    /// Writing the realm's files or starting a program failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A Kerberos program exited with an error.
    #[error("{command} failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    /// `krb5kdc` did not accept connections in time.
    #[error("krb5kdc did not listen on {addr} within {secs}s; its log: {log}")]
    NotListening {
        addr: SocketAddr,
        secs: u64,
        log: String,
    },
}

/// A running MIT KDC with one realm; dropping it kills `krb5kdc`.
pub struct TestKdc {
    dir: PathBuf,
    kdc_addr: SocketAddr,
    krb5_conf: PathBuf,
    keytab: PathBuf,
    password: String,
    child: Child,
}

impl TestKdc {
    /// `None` when every program the fixture runs is installed, or what is missing.
    pub fn missing_tools() -> Option<String> {
        let missing: Vec<&str> = TOOLS
            .iter()
            .copied()
            .filter(|t| find_tool(t).is_none())
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "MIT Kerberos programs not found on PATH or in /usr/sbin: {}",
                missing.join(", ")
            )
        })
    }

    /// Whether `test` can run: true with every program installed; without them it prints that
    /// `test` is skipped, or panics when `EASGATE_REQUIRE_POLYGLOT=1` (CI, where a skip is a
    /// failure). The one skip rule of every Kerberos test, in the lab's and the connector's.
    pub fn available_for(test: &str) -> bool {
        match Self::missing_tools() {
            None => true,
            Some(why) if std::env::var("EASGATE_REQUIRE_POLYGLOT").is_ok_and(|v| v == "1") => {
                panic!(
                    "{test}: {why}, and EASGATE_REQUIRE_POLYGLOT=1 requires it (.ci/install-kerberos)"
                )
            }
            Some(why) => {
                eprintln!("skipping {test}: {why}");
                false
            }
        }
    }

    /// Makes the realm in `dir` (created if absent; its previous realm files are replaced) and
    /// starts its KDC on a free loopback port. Blocks until the KDC accepts TCP connections
    /// (a few hundred milliseconds); call it from `spawn_blocking` in async code if that matters.
    pub fn start(dir: &Path) -> Result<TestKdc, KdcError> {
        if let Some(why) = Self::missing_tools() {
            return Err(KdcError::MissingTool(why));
        }
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(io_err(format!("resolving {}", dir.display())))?;
        for stale in [
            "principal",
            "principal.ok",
            "principal.kadm5",
            "principal.kadm5.lock",
        ] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        let port = free_port()?;
        let kdc_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let krb5_conf = dir.join("krb5.conf");
        let kdc_conf = dir.join("kdc.conf");
        let keytab = dir.join("http.keytab");
        let _ = std::fs::remove_file(&keytab);
        write(&krb5_conf, &krb5_conf_text(kdc_addr))?;
        write(&kdc_conf, &kdc_conf_text(&dir, port))?;
        write(&dir.join("kadm5.acl"), "")?;

        // Passwords are fixed: the realm lives only in a temp dir on loopback for one test.
        let password = "Lab-Kerberos-Password-1".to_owned();
        let env = [
            ("KRB5_CONFIG", krb5_conf.as_os_str()),
            ("KRB5_KDC_PROFILE", kdc_conf.as_os_str()),
        ];
        run(
            "kdb5_util",
            &["-r", REALM, "create", "-s", "-P", "lab-master-key"],
            &env,
        )?;
        run(
            "kadmin.local",
            &[
                "-r",
                REALM,
                "-q",
                // Pre-authentication required, as Active Directory does for every account: a
                // wrong password is then the KDC's KDC_ERR_PREAUTH_FAILED, not an AS-REP the
                // client cannot decrypt.
                &format!("addprinc +requires_preauth -pw {password} {USER}@{REALM}"),
            ],
            &env,
        )?;
        run(
            "kadmin.local",
            &[
                "-r",
                REALM,
                "-q",
                &format!("addprinc -randkey HTTP/{SERVICE_HOST}@{REALM}"),
            ],
            &env,
        )?;
        run(
            "kadmin.local",
            &[
                "-r",
                REALM,
                "-q",
                &format!("ktadd -k {} HTTP/{SERVICE_HOST}@{REALM}", keytab.display()),
            ],
            &env,
        )?;

        let log = dir.join("kdc.log");
        let mut cmd = Command::new(find_tool("krb5kdc").expect("checked above"));
        // -n: stay in the foreground, so that the child is the KDC and Drop can kill it.
        cmd.args(["-n", "-r", REALM])
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(io_err("starting krb5kdc".to_owned()))?;
        let kdc = TestKdc {
            dir,
            kdc_addr,
            krb5_conf,
            keytab,
            password,
            child,
        };
        kdc.wait_listening(&log)?;
        Ok(kdc)
    }

    fn wait_listening(&self, log: &Path) -> Result<(), KdcError> {
        let limit = Duration::from_secs(10);
        let start = Instant::now();
        while start.elapsed() < limit {
            if TcpStream::connect_timeout(&self.kdc_addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(KdcError::NotListening {
            addr: self.kdc_addr,
            secs: limit.as_secs(),
            log: std::fs::read_to_string(log).unwrap_or_default(),
        })
    }

    /// The realm, [`REALM`].
    pub fn realm(&self) -> &str {
        REALM
    }

    /// Where the KDC listens, UDP and TCP: `127.0.0.1:PORT`.
    pub fn kdc_addr(&self) -> SocketAddr {
        self.kdc_addr
    }

    /// A `krb5.conf` naming this KDC for [`REALM`] (default realm), for `KRB5_CONFIG`.
    pub fn krb5_conf(&self) -> &Path {
        &self.krb5_conf
    }

    /// The keytab with the key of [`TestKdc::service_principal`], for an acceptor (`KRB5_KTNAME`).
    pub fn keytab(&self) -> &Path {
        &self.keytab
    }

    /// `HTTP/localhost@LAB.EASGATE.TEST`.
    pub fn service_principal(&self) -> String {
        format!("HTTP/{SERVICE_HOST}@{REALM}")
    }

    /// The user's principal, `svc-easgate@LAB.EASGATE.TEST`.
    pub fn user_principal(&self) -> String {
        format!("{USER}@{REALM}")
    }

    /// The user's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The directory of the realm's files (database, stash, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs one `kadmin.local` query on the realm while its KDC serves it, as an admin would:
    /// `ktadd -k FILE -norandkey svc-easgate` exports the user's keys to a keytab (its password
    /// still works), `cpw -pw NEW svc-easgate` changes its password (and key version).
    pub fn kadmin(&self, query: &str) -> Result<(), KdcError> {
        let kdc_conf = self.dir.join("kdc.conf");
        run(
            "kadmin.local",
            &["-r", REALM, "-q", query],
            &[
                ("KRB5_CONFIG", self.krb5_conf.as_os_str()),
                ("KRB5_KDC_PROFILE", kdc_conf.as_os_str()),
            ],
        )
    }
}

impl Drop for TestKdc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` on PATH, else in /usr/sbin (Debian puts the KDC's programs there, and a non-root PATH
/// often lacks it).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A port free for both TCP and UDP on loopback. Another process could take it before krb5kdc
/// binds; then `wait_listening` fails with the KDC's log rather than hanging.
fn free_port() -> Result<u16, KdcError> {
    for _ in 0..20 {
        let tcp = TcpListener::bind("127.0.0.1:0").map_err(io_err("binding a port".into()))?;
        let port = tcp
            .local_addr()
            .map_err(io_err("reading a port".into()))?
            .port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(KdcError::Io {
        what: "finding a loopback port free for TCP and UDP".into(),
        source: io::Error::other("20 tries"),
    })
}

fn krb5_conf_text(kdc: SocketAddr) -> String {
    let mut s = String::new();
    // Everything stays on this machine: no DNS for KDCs or realms, no canonicalization of the
    // service's host name, which would turn `localhost` into whatever the resolver says.
    let _ = write!(
        s,
        "[libdefaults]\n\
         \tdefault_realm = {REALM}\n\
         \tdns_lookup_kdc = false\n\
         \tdns_lookup_realm = false\n\
         \tdns_canonicalize_hostname = false\n\
         \trdns = false\n\
         \tignore_acceptor_hostname = true\n\
         \tudp_preference_limit = 1\n\
         \tforwardable = true\n\
         \n\
         [realms]\n\
         \t{REALM} = {{\n\
         \t\tkdc = {kdc}\n\
         \t\tadmin_server = {kdc}\n\
         \t}}\n\
         \n\
         [domain_realm]\n\
         \tlocalhost = {REALM}\n\
         \t127.0.0.1 = {REALM}\n"
    );
    s
}

fn kdc_conf_text(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "[kdcdefaults]\n\
         \tkdc_listen = 127.0.0.1:{port}\n\
         \tkdc_tcp_listen = 127.0.0.1:{port}\n\
         \n\
         [realms]\n\
         \t{REALM} = {{\n\
         \t\tdatabase_name = {d}/principal\n\
         \t\tkey_stash_file = {d}/stash\n\
         \t\tacl_file = {d}/kadm5.acl\n\
         \t\tkdc_listen = 127.0.0.1:{port}\n\
         \t\tkdc_tcp_listen = 127.0.0.1:{port}\n\
         \t\tmax_life = 10h 0m 0s\n\
         \t\tsupported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n\
         \t}}\n\
         \n\
         [logging]\n\
         \tkdc = FILE:{d}/kdc.log\n\
         \tdefault = FILE:{d}/kdc.log\n"
    )
}

fn write(path: &Path, text: &str) -> Result<(), KdcError> {
    std::fs::write(path, text).map_err(io_err(format!("writing {}", path.display())))
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> KdcError {
    move |source| KdcError::Io { what, source }
}

fn run(tool: &str, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Result<(), KdcError> {
    let program = find_tool(tool).ok_or_else(|| KdcError::MissingTool(tool.to_owned()))?;
    let out = Command::new(&program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {}", program.display())))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(KdcError::Command {
            command: format!("{tool} {}", args.join(" ")),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinit_gets_a_ticket_and_a_service_ticket_from_the_test_kdc() {
        if !TestKdc::available_for("kinit_gets_a_ticket_and_a_service_ticket_from_the_test_kdc") {
            return;
        }
        let Some(kinit) = find_tool("kinit") else {
            panic!("kinit missing (krb5-user)");
        };
        let dir = std::env::temp_dir().join(format!("easgate-kdc-test-{}", std::process::id()));
        let kdc = TestKdc::start(&dir).expect("KDC starts");
        let ccache = format!("FILE:{}/ccache", dir.display());
        let kinit_with = |password: &str| {
            let mut child = Command::new(&kinit)
                .arg(kdc.user_principal())
                .env("KRB5_CONFIG", kdc.krb5_conf())
                .env("KRB5CCNAME", &ccache)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("kinit runs");
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            writeln!(stdin, "{password}").expect("password written");
            drop(stdin);
            child.wait_with_output().expect("kinit ends")
        };
        let ok = kinit_with(kdc.password());
        assert!(
            ok.status.success(),
            "kinit with the right password: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let bad = kinit_with("not-the-password");
        assert!(
            !bad.status.success(),
            "kinit with a wrong password succeeded"
        );

        // A service ticket for the lab's SPN, decryptable with the keytab's key: kvno -k checks it.
        let kinit_ok = kinit_with(kdc.password());
        assert!(kinit_ok.status.success());
        let kvno = find_tool("kvno").expect("kvno (krb5-user)");
        let out = Command::new(kvno)
            .args(["-k"])
            .arg(kdc.keytab())
            .arg(kdc.service_principal())
            .env("KRB5_CONFIG", kdc.krb5_conf())
            .env("KRB5CCNAME", &ccache)
            .output()
            .expect("kvno runs");
        assert!(
            out.status.success(),
            "kvno -k {}: {}{}",
            kdc.service_principal(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let addr = kdc.kdc_addr();
        drop(kdc);
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
            "the KDC still listens after drop"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
