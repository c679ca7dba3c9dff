//! `easgate sim`: the lab's simulated services alone, for developing, benchmarking and
//! demonstrating the connector, or for rehearsing a policy against a realistic organization.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use crate::connector_config::ExchangeApi;
use crate::exchange::cost::{DEFAULT_CONCURRENCY, LatencyModel};
use crate::{Lab, LabOptions};

/// Flags of `easgate sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Number of Exchange ActiveSync devices (over about half as many mailboxes).
    #[arg(long, default_value_t = 10_000)]
    pub devices: usize,

    /// Seed of the dataset: the same seed gives the same organization.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Number of Client Access Server endpoints serving the organization.
    #[arg(long, default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub cas: usize,

    /// Fixed latency of every Exchange command, in milliseconds (0: as fast as possible).
    #[arg(long = "latency-ms", default_value_t = 0)]
    pub latency_ms: u64,

    /// Additional Exchange latency per returned object, in microseconds.
    #[arg(long = "latency-per-object-us", default_value_t = 0)]
    pub latency_per_object_us: u64,

    /// Concurrent Exchange requests per tenant before "maximum number of concurrent requests"
    /// (429); Exchange's default throttling allows 18.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,

    /// Loopback address to listen on. Port 0 picks free ports; otherwise the CAS endpoints take
    /// consecutive ports from this one, followed by Graph/login, control and SMTP.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// Write a connector configuration pointing at the lab to PATH (the client secret goes to
    /// PATH with the extension `.secret`, which the configuration references).
    #[arg(long = "write-config", value_name = "PATH")]
    pub write_config: Option<PathBuf>,

    /// Which Exchange face the written configuration uses: `rest` (Exchange Online's admin API)
    /// or `powershell` (on-premises remote PowerShell at `/PowerShell/`, Basic authentication;
    /// the password goes to PATH.exchange-password).
    #[arg(long = "exchange-api", value_enum, default_value_t = ExchangeApi::Rest)]
    pub exchange_api: ExchangeApi,

    /// Also run a Kerberos KDC (MIT `krb5kdc`, `.ci/install-kerberos`) on loopback, realm
    /// `LAB.EASGATE.TEST`, and accept Kerberos on `/PowerShell/` (with message encryption);
    /// with `--exchange-api powershell --write-config`, the configuration authenticates with it.
    #[arg(long)]
    pub kerberos: bool,

    /// Serve Graph, login and the CAS endpoints (REST and /PowerShell/) over https, with a
    /// certificate authority generated for this run, written to PATH (PEM): for clients that
    /// insist on an https authority (azure-identity, MSAL: `REQUESTS_CA_BUNDLE` /
    /// `SSL_CERT_FILE`); with `--write-config` the connector's config trusts it through
    /// `[network] ca_file`.
    #[arg(long = "tls-ca", value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,

    /// With `--tls-ca`: check the channel binding of NTLM and Kerberos sign-ins on
    /// /PowerShell/ as IIS's Extended Protection does (`require`: Exchange 2019 CU14's default;
    /// `allow`: only a binding that is sent must match; `none`: no check).
    #[arg(long = "extended-protection", value_enum, default_value_t = crate::ExtendedProtection::None)]
    pub extended_protection: crate::ExtendedProtection,
}

impl SimArgs {
    /// The lab options these flags ask for.
    pub fn options(&self) -> LabOptions {
        LabOptions {
            devices: self.devices,
            seed: self.seed,
            cas: self.cas,
            latency: LatencyModel::uniform(self.latency_ms, self.latency_per_object_us),
            exchange_concurrency: self.concurrency,
            listen: self.listen,
            tls: self.tls_ca.is_some(),
            cas_tls: self.tls_ca.is_some(),
            extended_protection: self.extended_protection,
            ..LabOptions::default()
        }
    }
}

/// Starts the lab, prints where it listens (and the written config), and serves until
/// `shutdown` completes.
pub async fn run_sim(
    args: SimArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let lab = Lab::start(args.options()).await?;
    let info = lab.control().info();
    if let (Some(path), Some(pem)) = (&args.tls_ca, lab.tls_ca_pem()) {
        std::fs::write(path, pem).map_err(|e| {
            anyhow::anyhow!(
                "cannot write the lab's CA certificate to {}: {e}",
                path.display()
            )
        })?;
    }
    // Kept until shutdown: dropping it stops the KDC.
    let kdc = if args.kerberos {
        let dir = std::env::temp_dir().join(format!("easgate-sim-kdc-{}", std::process::id()));
        let kdc = tokio::task::spawn_blocking(move || crate::kdc::TestKdc::start(&dir)).await??;
        lab.enable_powershell_kerberos(kdc.keytab())
            .map_err(anyhow::Error::msg)?;
        Some(kdc)
    } else {
        None
    };
    let realm = kdc
        .as_ref()
        .map(|k| crate::connector_config::KerberosRealm {
            username: crate::kdc::USER.to_owned(),
            realm: k.realm().to_owned(),
            kdc: k.kdc_addr().to_string(),
            krb5_conf: k.krb5_conf().to_owned(),
            password: k.password().to_owned(),
        });
    println!(
        "easgate lab: {} with {} devices over {} mailboxes, {} Intune records (seed {})",
        info.organization, info.devices, info.mailboxes, info.managed_devices, args.seed
    );
    for (i, url) in info.cas_urls.iter().enumerate() {
        let role = if i == 0 { " (primary)" } else { "" };
        println!("  exchange CAS{:02}  {url}{role}", i + 1);
    }
    println!("  graph          {}", info.graph_url);
    println!("  login          {}", info.login_url);
    if let Some(path) = &args.tls_ca {
        println!(
            "  tls ca         {} (trust it for graph, login and the CAS endpoints)",
            path.display()
        );
    }
    println!("  control        {}/_lab/info", info.control_url);
    println!("  smtp sink      {}", info.smtp);
    println!(
        "  tenant         {} ({})",
        info.tenant_id, info.tenant_domain
    );
    println!("  client id      {}", info.client_id);
    println!(
        "  client secret  {} (lab credentials, not a real secret)",
        info.client_secret
    );
    for (i, url) in info.powershell_urls.iter().enumerate() {
        println!("  powershell CAS{:02} {url}", i + 1);
    }
    println!(
        "  powershell     {} / {} (Basic, lab credentials)",
        info.powershell_user, info.powershell_password
    );
    if let Some(k) = &kdc {
        println!(
            "  kerberos       {} / {} (realm {}, KDC {}, SPN {}, KRB5_CONFIG={})",
            k.user_principal(),
            k.password(),
            k.realm(),
            k.kdc_addr(),
            k.service_principal(),
            k.krb5_conf().display()
        );
    }
    if let (Some(path), ExchangeApi::Powershell) = (&args.write_config, args.exchange_api) {
        let password =
            crate::connector_config::write_powershell(&info, "contoso", path, realm.as_ref())?;
        println!(
            "  config         {} (password in {})",
            path.display(),
            password.display()
        );
    } else if let Some(path) = &args.write_config {
        let secret = lab.write_connector_config(path)?;
        println!(
            "  config         {} (secret in {})",
            path.display(),
            secret.display()
        );
    }
    if let (Some(config), Some(ca)) = (&args.write_config, &args.tls_ca) {
        trust_ca(config, ca)?;
    }
    println!("ready in {} ms", started.elapsed().as_millis());
    shutdown.await;
    lab.shutdown().await;
    drop(kdc);
    Ok(())
}

/// Appends `[network] ca_file = <ca>` to the written connector config, so that the connector
/// trusts the lab's authority on every https URL of it (an absolute path: the config may be
/// read from elsewhere).
fn trust_ca(config: &std::path::Path, ca: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let ca = std::path::absolute(ca)?;
    let line = toml::Value::String(ca.display().to_string());
    let mut f = std::fs::OpenOptions::new().append(true).open(config)?;
    writeln!(
        f,
        "\n# The lab's certificate authority (easgate sim --tls-ca).\n[network]\nca_file = {line}"
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn extended_protection_is_off_unless_asked_and_reaches_the_lab_options() {
        let plain = Cli::try_parse_from(["sim"]).unwrap().sim;
        assert_eq!(
            plain.options().extended_protection,
            crate::ExtendedProtection::None
        );
        let asked = Cli::try_parse_from([
            "sim",
            "--tls-ca",
            "ca.pem",
            "--extended-protection",
            "require",
        ])
        .unwrap()
        .sim;
        let o = asked.options();
        assert!(o.cas_tls);
        assert_eq!(o.extended_protection, crate::ExtendedProtection::Require);
    }
}
