//! `easgate notice preview`: the notice a user would get about a stored device, rendered by the
//! active template with the organization's settings, printed and never sent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::notify::{NoticeId, NoticeSettings};
use crate::plugin::registry::RegistryOptions;
use crate::plugin::{PluginEngine, PluginRegistry};
use crate::store::{NoticeStatus, OutboxNotice, Store};
use crate::sync::notices::template_input;
use crate::timestamp::unix_now;

#[derive(Debug, Subcommand)]
pub enum NoticeCommand {
    /// Render the notice a device's user would get, without sending it.
    Preview(PreviewArgs),
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The device: its Exchange `DeviceId` or its partnership `Identity` (case-insensitive).
    #[arg(long)]
    device: String,
    /// The configuration file.
    #[arg(long)]
    config: PathBuf,
    /// The organization (default: the first one holding the device).
    #[arg(long)]
    org: Option<String>,
}

pub fn run(command: NoticeCommand) -> anyhow::Result<ExitCode> {
    let NoticeCommand::Preview(args) = command;
    let config = Config::load(&args.config)?;
    let Some(notify) = &config.notify else {
        bail!(
            "{} has no [notify] section: notices are off",
            args.config.display()
        );
    };
    // Read-only use of the store: no recovery, which is the sync's business.
    let store = Store::open(&config.sync.data_dir)?;
    let wanted = args.device.to_lowercase();
    let mut found = None;
    for org in &config.organizations {
        if args
            .org
            .as_ref()
            .is_some_and(|name| !name.eq_ignore_ascii_case(&org.name))
        {
            continue;
        }
        let id = store.organization(&org.name, unix_now())?;
        let device = store.devices(id)?.into_iter().find(|d| {
            d.key.as_str() == wanted || d.exchange.device_id.eq_ignore_ascii_case(&wanted)
        });
        if let Some(device) = device {
            found = Some((org, id, device));
            break;
        }
    }
    let Some((org, org_id, device)) = found else {
        bail!("no stored device `{}`", args.device);
    };
    let Some(decision) = &device.decision else {
        bail!(
            "device `{}` has no verdict yet: run a sync first",
            args.device
        );
    };
    // The user's address is the one the outbox recorded for the device's latest notice; a
    // device never noticed falls back to its mailbox as Exchange names it.
    let latest = store
        .notices(org_id, usize::MAX)?
        .into_iter()
        .find(|n| n.key == device.key);
    let (recipient, upn) = match &latest {
        Some(n) => (n.recipient.clone(), n.user_principal_name.clone()),
        None => (device.exchange.mailbox.clone().unwrap_or_default(), None),
    };
    let notice = OutboxNotice {
        id: NoticeId::new("preview").expect("a valid id"),
        org: org_id,
        run: decision.run,
        key: device.key.clone(),
        device_id: device.exchange.device_id.clone(),
        state: decision.verdict,
        reason: decision.reason.clone(),
        recipient,
        user_principal_name: upn,
        exchange: device.exchange.clone(),
        managed: device.managed.clone(),
        status: NoticeStatus::Pending,
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        template_digest: None,
        response: None,
        created_at: decision.decided_at,
        sent_at: None,
    };
    let settings = NoticeSettings::new(&org.name, &notify.for_organization(org))?;
    let registry = PluginRegistry::new(
        PluginEngine::new()?,
        RegistryOptions::from_config(&config.sync),
    )?;
    let template = registry.notice_template();
    let rendered = template
        .render(&template_input(&settings, &notice))
        .with_context(|| format!("template {} failed", template.meta.digest.short()))?;
    let input = template_input(&settings, &notice);
    let outgoing = settings.outgoing(
        notice.id.clone(),
        &input.device,
        rendered,
        std::time::SystemTime::now(),
    )?;
    println!(
        "Template: {} ({})",
        template.meta.name,
        template.meta.digest.short()
    );
    println!(
        "Verdict: {} ({})",
        decision.verdict.as_str(),
        decision.reason
    );
    println!("From: {}", outgoing.from);
    println!("To: {}", outgoing.recipients.to);
    for cc in &outgoing.recipients.cc {
        println!("Cc: {cc}");
    }
    println!("Subject: {}", outgoing.rendered.subject);
    println!("\n--- text ---\n{}", outgoing.rendered.text);
    println!("\n--- html ---\n{}", outgoing.rendered.html);
    Ok(ExitCode::SUCCESS)
}
