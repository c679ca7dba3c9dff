//! The seeded dataset: a realistic Contoso with `N` EAS devices over about `N/2` mailboxes.
//!
//! What makes it realistic is the mix a connector meets in the field: native mail apps of iOS and
//! several Android makers next to Outlook for iOS/Android and a legacy Windows Phone; about 70 %
//! of the devices enrolled in Intune with every `complianceState` represented; Intune records of
//! laptops with no EAS partnership and stale records whose partnership is gone; device ids whose
//! case differs between Exchange and Intune; users whose primary SMTP differs from the UPN;
//! devices whose owner left; mailboxes with pre-existing (and partly stale) allow/block entries;
//! two device access rules; and nested groups.
//!
//! Everything is drawn from `random::Rng` streams of the seed, and all times are offsets before
//! an anchor instant, so one seed and anchor always give the same organization.

use std::collections::HashMap;

use crate::org::{
    AccessLevel, AccessReason, AccessState, Characteristic, ComplianceState, Departed, DeviceRule,
    EasDevice, Group, Mailbox, ManagedDevice, ManagementState, Org, OrgSettings, Owner, OwnerType,
    Tenant,
};
use crate::random::{Guid, Rng, mix};
use crate::utc::Utc;

/// The mail client of a device partnership; decides the user agent, the id format and `ClientType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client {
    AppleMail,
    SamsungMail,
    GmailEas,
    Outlook,
    WindowsPhone,
    /// Intune-only device (laptop): no EAS partnership.
    NoEas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Platform {
    Ios,
    IpadOs,
    Android,
    WindowsPhone,
    Windows,
    MacOs,
}

impl Platform {
    /// Graph `operatingSystem`.
    pub fn graph_os(self) -> &'static str {
        match self {
            Platform::Ios => "iOS",
            Platform::IpadOs => "iPadOS",
            Platform::Android => "Android",
            Platform::WindowsPhone | Platform::Windows => "Windows",
            Platform::MacOs => "macOS",
        }
    }

    /// The platform word Intune puts in generated `managedDeviceName`s.
    fn name_word(self) -> &'static str {
        match self {
            Platform::Ios => "iPhone",
            Platform::IpadOs => "iPad",
            Platform::Android => "AndroidForWork",
            Platform::WindowsPhone | Platform::Windows => "Windows",
            Platform::MacOs => "MacOS",
        }
    }
}

/// One OS build: how Exchange prints it (`DeviceOS`), how Intune prints it (`osVersion`), and
/// the build token of the user agent.
#[derive(Debug)]
pub(crate) struct OsBuild {
    pub eas_os: &'static str,
    pub version: &'static str,
    pub ua: &'static str,
}

/// A kind of device as both services see it.
#[derive(Debug)]
pub(crate) struct Profile {
    /// Exchange `DeviceType` (the "family" of a device access rule).
    pub eas_type: &'static str,
    /// Exchange `DeviceModel`.
    pub eas_model: &'static str,
    /// Graph `model`.
    pub model: &'static str,
    pub manufacturer: &'static str,
    pub platform: Platform,
    pub client: Client,
    pub builds: &'static [OsBuild],
    /// Relative frequency among EAS partnerships (0: Intune-only).
    pub eas_weight: u32,
    /// Relative frequency among Intune-only devices.
    pub intune_only_weight: u32,
    /// Share of this kind's partnerships enrolled in Intune, per mille.
    pub enroll_per_mille: u32,
    pub storage_gb: u64,
}

impl Profile {
    /// Exchange `DeviceUserAgent` for a build of this kind.
    pub fn user_agent(&self, build: &OsBuild) -> String {
        match self.client {
            Client::AppleMail => format!("Apple-{}/{}", self.eas_model, build.ua),
            Client::SamsungMail => format!("SAMSUNG-{}/{}", self.eas_model, build.ua),
            Client::GmailEas => format!("Android/{}", build.ua),
            Client::Outlook => "Outlook-iOS-Android/1.0".to_owned(),
            Client::WindowsPhone => format!("MSFT-WP/{}", build.ua),
            Client::NoEas => String::new(),
        }
    }

    /// Exchange `ClientType`.
    pub fn client_type(&self) -> &'static str {
        match self.client {
            Client::Outlook => "Outlook",
            _ => "EAS",
        }
    }

    /// Exchange `ClientVersion` (the EAS protocol version negotiated).
    pub fn client_version(&self) -> &'static str {
        match self.client {
            Client::Outlook => "1.0",
            Client::WindowsPhone | Client::GmailEas => "14.1",
            _ => "16.1",
        }
    }

    pub fn is_phone(&self) -> bool {
        !matches!(
            self.platform,
            Platform::IpadOs | Platform::Windows | Platform::MacOs
        )
    }

    /// What Exchange shows as `FriendlyName` and Intune as `deviceName`.
    pub fn friendly_name(&self, first_name: &str) -> String {
        match self.platform {
            Platform::Ios if self.client == Client::AppleMail => format!("{first_name}'s iPhone"),
            Platform::IpadOs => format!("{first_name}'s iPad"),
            Platform::MacOs => format!("{first_name}'s MacBook Pro"),
            Platform::Windows => format!("DESKTOP-{}", &first_name.to_ascii_uppercase()),
            _ => self.model.to_owned(),
        }
    }

    /// Intune's generated `managedDeviceName`: `alias_Platform_5/3/2024_9:40 AM`.
    pub fn managed_device_name(&self, alias: &str, enrolled: Utc) -> String {
        format!(
            "{alias}_{}_{}",
            self.platform.name_word(),
            enrolled.us_short()
        )
    }
}

const IOS: &[OsBuild] = &[
    OsBuild {
        eas_os: "iOS 17.5.1 21F90",
        version: "17.5.1",
        ua: "2105.90",
    },
    OsBuild {
        eas_os: "iOS 17.4.1 21E236",
        version: "17.4.1",
        ua: "2104.236",
    },
    OsBuild {
        eas_os: "iOS 18.0 22A3354",
        version: "18.0",
        ua: "2201.3354",
    },
    OsBuild {
        eas_os: "iOS 16.7.8 20H343",
        version: "16.7.8",
        ua: "2008.343",
    },
];
const SAMSUNG: &[OsBuild] = &[
    OsBuild {
        eas_os: "Android 14.0.0",
        version: "14",
        ua: "101.140104",
    },
    OsBuild {
        eas_os: "Android 13.0.0",
        version: "13",
        ua: "101.130103",
    },
];
const SAMSUNG_OLD: &[OsBuild] = &[OsBuild {
    eas_os: "Android 10.0.0",
    version: "10",
    ua: "101.100001",
}];
const GMAIL: &[OsBuild] = &[
    OsBuild {
        eas_os: "Android 14",
        version: "14",
        ua: "14-EAS-2.0",
    },
    OsBuild {
        eas_os: "Android 13",
        version: "13",
        ua: "13-EAS-2.0",
    },
];
const OUTLOOK_IOS: &[OsBuild] = &[
    OsBuild {
        eas_os: "iOS 17.5.1",
        version: "17.5.1",
        ua: "",
    },
    OsBuild {
        eas_os: "iOS 18.0",
        version: "18.0",
        ua: "",
    },
];
const OUTLOOK_ANDROID: &[OsBuild] = &[OsBuild {
    eas_os: "Android 14",
    version: "14",
    ua: "",
}];
const WINDOWS_PHONE: &[OsBuild] = &[OsBuild {
    eas_os: "Windows Phone 10.0.15254",
    version: "10.0.15254.603",
    ua: "10.0.15254",
}];
const WINDOWS: &[OsBuild] = &[OsBuild {
    eas_os: "",
    version: "10.0.22631.3593",
    ua: "",
}];
const MACOS: &[OsBuild] = &[OsBuild {
    eas_os: "",
    version: "14.5 (23F79)",
    ua: "",
}];

macro_rules! profile {
    ($ty:literal, $eas_model:literal, $model:literal, $maker:literal, $platform:ident, $client:ident,
     $builds:ident, eas $w:literal, only $o:literal, enroll $e:literal, $gb:literal) => {
        Profile {
            eas_type: $ty,
            eas_model: $eas_model,
            model: $model,
            manufacturer: $maker,
            platform: Platform::$platform,
            client: Client::$client,
            builds: $builds,
            eas_weight: $w,
            intune_only_weight: $o,
            enroll_per_mille: $e,
            storage_gb: $gb,
        }
    };
}

/// The device catalog. Weights follow a typical enterprise fleet: iPhones first, Samsung next,
/// Outlook for iOS/Android common, a long tail of Android makers through Gmail's EAS client.
pub(crate) static PROFILES: &[Profile] = &[
    profile!("iPhone", "iPhone16C1", "iPhone 15 Pro", "Apple", Ios, AppleMail, IOS, eas 14, only 0, enroll 820, 256),
    profile!("iPhone", "iPhone14C7", "iPhone 14", "Apple", Ios, AppleMail, IOS, eas 12, only 0, enroll 800, 128),
    profile!("iPhone", "iPhone14C5", "iPhone 13", "Apple", Ios, AppleMail, IOS, eas 12, only 0, enroll 790, 128),
    profile!("iPhone", "iPhone13C2", "iPhone 12", "Apple", Ios, AppleMail, IOS, eas 8, only 0, enroll 760, 64),
    profile!("iPhone", "iPhone14C6", "iPhone SE (3rd generation)", "Apple", Ios, AppleMail, IOS, eas 4, only 0, enroll 760, 64),
    profile!("iPad", "iPad13C16", "iPad Air (5th generation)", "Apple", IpadOs, AppleMail, IOS, eas 4, only 0, enroll 700, 64),
    profile!("iPad", "iPad14C6", "iPad Pro (12.9-inch) (6th generation)", "Apple", IpadOs, AppleMail, IOS, eas 2, only 0, enroll 700, 256),
    profile!("SAMSUNGSMS911B", "SM-S911B", "SM-S911B", "samsung", Android, SamsungMail, SAMSUNG, eas 8, only 0, enroll 760, 256),
    profile!("SAMSUNGSMS901B", "SM-S901B", "SM-S901B", "samsung", Android, SamsungMail, SAMSUNG, eas 5, only 0, enroll 740, 128),
    profile!("SAMSUNGSMA546B", "SM-A546B", "SM-A546B", "samsung", Android, SamsungMail, SAMSUNG, eas 5, only 0, enroll 700, 128),
    profile!("SAMSUNGSMG960F", "SM-G960F", "SM-G960F", "samsung", Android, SamsungMail, SAMSUNG_OLD, eas 1, only 0, enroll 400, 64),
    profile!("Android", "Pixel 8", "Pixel 8", "Google", Android, GmailEas, GMAIL, eas 4, only 0, enroll 650, 128),
    profile!("Android", "23078PND5G", "23078PND5G", "Xiaomi", Android, GmailEas, GMAIL, eas 2, only 0, enroll 600, 256),
    profile!("Android", "moto g84 5G", "moto g84 5G", "motorola", Android, GmailEas, GMAIL, eas 2, only 0, enroll 600, 256),
    profile!("Android", "CPH2449", "CPH2449", "OnePlus", Android, GmailEas, GMAIL, eas 1, only 0, enroll 600, 256),
    profile!("Outlook", "Outlook for iOS and Android", "iPhone 15", "Apple", Ios, Outlook, OUTLOOK_IOS, eas 10, only 0, enroll 560, 128),
    profile!("Outlook", "Outlook for iOS and Android", "SM-S918B", "samsung", Android, Outlook, OUTLOOK_ANDROID, eas 5, only 0, enroll 540, 256),
    profile!("WP8", "Lumia 950", "Lumia 950", "Microsoft", WindowsPhone, WindowsPhone, WINDOWS_PHONE, eas 1, only 0, enroll 0, 32),
    profile!("", "", "Latitude 7440", "Dell Inc.", Windows, NoEas, WINDOWS, eas 0, only 7, enroll 0, 512),
    profile!("", "", "MacBookPro18,3", "Apple", MacOs, NoEas, MACOS, eas 0, only 3, enroll 0, 512),
];

const FIRST_NAMES: &[&str] = &[
    "Adele",
    "Alex",
    "Allan",
    "Amir",
    "Ana",
    "Ben",
    "Bianca",
    "Carlos",
    "Chen",
    "Christie",
    "Daniel",
    "Diego",
    "Elena",
    "Emily",
    "Farah",
    "Grady",
    "Hannah",
    "Henrietta",
    "Isaiah",
    "Ivan",
    "Jana",
    "Johanna",
    "Joni",
    "Kenji",
    "Lee",
    "Lidia",
    "Lynne",
    "Megan",
    "Miriam",
    "Nestor",
    "Nina",
    "Olga",
    "Omar",
    "Patti",
    "Pradeep",
    "Priya",
    "Raul",
    "Sakura",
    "Sofia",
    "Tomas",
    "Uma",
    "Victor",
    "Wei",
    "Xavier",
    "Yara",
    "Zoe",
];
const LAST_NAMES: &[&str] = &[
    "Adams", "Bauer", "Berg", "Choi", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Gupta",
    "Hansen", "Ito", "Jensen", "Kaur", "Kowalski", "Larsen", "Lopez", "Martin", "Mehta", "Moreau",
    "Nakamura", "Novak", "Okafor", "Olsen", "Park", "Petrov", "Quinn", "Rossi", "Santos",
    "Schmidt", "Silva", "Singh", "Smith", "Tanaka", "Torres", "Vance", "Wagner", "Wang", "Weber",
    "Wilson", "Yamada", "Zhang",
];
const DEPARTMENTS: &[(&str, u32)] = &[
    ("Sales", 22),
    ("Engineering", 25),
    ("Finance", 8),
    ("Human Resources", 5),
    ("Support", 15),
    ("Marketing", 10),
    ("Operations", 12),
    ("Legal", 3),
];
const ENGINEERING: u8 = 1;

/// Name of department `i` (Graph `department`).
pub(crate) fn department_name(i: u8) -> &'static str {
    DEPARTMENTS[usize::from(i)].0
}

/// What to generate.
#[derive(Debug, Clone)]
pub(crate) struct DatasetSpec {
    pub seed: u64,
    pub devices: usize,
    /// Every generated time lies before this instant.
    pub anchor: Utc,
}

/// Stream purposes, so each part of the dataset draws independently.
mod streams {
    pub const TENANT: u64 = 1;
    pub const PEOPLE: u64 = 2;
    pub const DEVICES: u64 = 3;
    pub const LISTS: u64 = 4;
    pub const INTUNE: u64 = 5;
    pub const GROUPS: u64 = 6;
    pub const ARRIVALS: u64 = 7;
}

const ALNUM_UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const HEX_UPPER: &[u8] = b"0123456789ABCDEF";

fn draw_chars(rng: &mut Rng, alphabet: &[u8], n: usize) -> String {
    (0..n).map(|_| char::from(*rng.pick(alphabet))).collect()
}

/// A `DeviceId` in the format the device's mail client uses.
fn device_id(rng: &mut Rng, client: Client) -> String {
    match client {
        Client::AppleMail if rng.chance(200) => format!("Appl{}", draw_chars(rng, ALNUM_UPPER, 11)),
        Client::AppleMail => draw_chars(rng, ALNUM_UPPER, 32),
        Client::SamsungMail => format!("SEC{}", draw_chars(rng, HEX_UPPER, 13)),
        Client::GmailEas => format!("androidc{}", draw_chars(rng, b"0123456789", 10)),
        Client::Outlook | Client::WindowsPhone | Client::NoEas => draw_chars(rng, HEX_UPPER, 32),
    }
}

/// `n` decimal digits derived from `seed` (IMEI, phone numbers) without storing them.
pub(crate) fn derived_digits(seed: u64, n: usize) -> String {
    let mut rng = Rng::stream(seed, 0xd161_7500);
    draw_chars(&mut rng, b"0123456789", n)
}

/// `n` uppercase alphanumerics derived from `seed` (serial numbers).
pub(crate) fn derived_alnum(seed: u64, n: usize) -> String {
    let mut rng = Rng::stream(seed, 0xa1_0000);
    draw_chars(&mut rng, ALNUM_UPPER, n)
}

/// A new EAS partnership of a random kind; times are left for the caller to set.
pub(crate) fn new_device(rng: &mut Rng, seed: u64, seq: u32, owner: Owner) -> EasDevice {
    let weights: Vec<u32> = PROFILES.iter().map(|p| p.eas_weight).collect();
    let profile = rng.weighted(&weights);
    let p = &PROFILES[profile];
    let build = rng.below(p.builds.len() as u64) as u8;
    EasDevice {
        seq,
        device_id: device_id(rng, p.client).into_boxed_str(),
        owner,
        profile: profile as u16,
        build,
        guid: rng.guid(),
        derive: mix(seed ^ (u64::from(seq) << 20) ^ rng.next_u64()),
        first_sync: Utc::from_unix(0),
        last_sync: Utc::from_unix(0),
        when_changed: Utc::from_unix(0),
        discovered: true,
        state: AccessState::Unknown,
        reason: AccessReason::Unknown,
        rule: None,
        wipe: None,
    }
}

fn tenant(seed: u64) -> Tenant {
    let mut rng = Rng::stream(seed, streams::TENANT);
    let tenant_id = rng.guid();
    let client_id = rng.guid();
    // Shaped like an Entra client secret value (40 characters with a `~` at position 5).
    let secret_alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
    let head = draw_chars(&mut rng, secret_alphabet, 3);
    let tail = draw_chars(&mut rng, secret_alphabet, 34);
    Tenant {
        organization: "Contoso".to_owned(),
        domain: "contoso.com".to_owned(),
        initial_domain: "contoso.onmicrosoft.com".to_owned(),
        tenant_id,
        client_id,
        client_secret: format!("{head}8Q~{tail}"),
    }
}

/// A person's name parts.
struct Person {
    first: &'static str,
    last: &'static str,
    alias: String,
}

/// Draws a person with an alias not yet in `taken`.
fn person(rng: &mut Rng, taken: &mut HashMap<String, u32>) -> Person {
    let first = *rng.pick(FIRST_NAMES);
    let last = *rng.pick(LAST_NAMES);
    let base = format!("{first}.{last}").to_ascii_lowercase();
    let n = taken.entry(base.clone()).or_insert(0);
    *n += 1;
    let alias = if *n == 1 { base } else { format!("{base}{n}") };
    Person { first, last, alias }
}

fn mailboxes(
    spec: &DatasetSpec,
    org_domain: &str,
    taken: &mut HashMap<String, u32>,
) -> Vec<Mailbox> {
    let mut rng = Rng::stream(spec.seed, streams::PEOPLE);
    let count = spec.devices.div_ceil(2).max(1);
    let dept_weights: Vec<u32> = DEPARTMENTS.iter().map(|d| d.1).collect();
    (0..count)
        .map(|_| {
            let p = person(&mut rng, taken);
            let smtp = format!("{}@{org_domain}", p.alias);
            // About 5 % sign in with a UPN that differs from their primary SMTP: an employee-number
            // style UPN, or one on an internal sub-domain left over from a migration.
            let upn = match rng.below(1000) {
                0..=29 => format!(
                    "{}{}{}@{org_domain}",
                    p.first[..1].to_ascii_lowercase(),
                    p.last.to_ascii_lowercase(),
                    rng.range(10, 9999)
                ),
                30..=49 => format!("{}@corp.{org_domain}", p.alias),
                _ => smtp.clone(),
            };
            let created = spec.anchor.minus_days(rng.range(30, 2500));
            // Drawn in the literal's former order: guid, then user id.
            let guid = rng.guid();
            let user_id = rng.guid();
            Mailbox {
                display_name: format!("{} {}", p.first, p.last).into_boxed_str(),
                alias: p.alias.into_boxed_str(),
                upn: upn.into_boxed_str(),
                primary_smtp: smtp.into_boxed_str(),
                guid,
                user_id,
                department: rng.weighted(&dept_weights) as u8,
                preferred_language: preferred_language(user_id),
                languages: mailbox_languages(user_id),
                allowed: Vec::new(),
                blocked: Vec::new(),
                active_sync_enabled: true,
                devices: Vec::new(),
                when_created: created,
                when_changed: created,
                edits_applied: 0,
            }
        })
        .collect()
}

/// A user's Graph `preferredLanguage`: most tenants leave it unset for most users (`null`);
/// the rest mostly speak the tenant's language, some another. Taken from the user id's bits,
/// not a new draw, so that the datasets of a seed stay what they were before languages.
fn preferred_language(user_id: Guid) -> Option<&'static str> {
    match (user_id.0 >> 64) % 100 {
        0..=39 => None,
        40..=74 => Some("en-US"),
        75..=84 => Some("de-DE"),
        85..=91 => Some("fr-FR"),
        92..=95 => Some("en-GB"),
        _ => Some("es-ES"),
    }
}

/// A mailbox's Exchange `Languages`: set by the user's first sign-in to Outlook on the web or
/// by an admin, so most mailboxes have one, often with a fallback after it; a third have none.
/// Languages the notice template does not speak (`it-IT`) are among them. Taken from other bits
/// of the user id than [`preferred_language`], so that the two vary independently.
fn mailbox_languages(user_id: Guid) -> &'static [&'static str] {
    match (user_id.0 >> 32) % 100 {
        0..=34 => &[],
        35..=64 => &["en-US"],
        65..=74 => &["de-DE"],
        75..=81 => &["fr-FR"],
        82..=85 => &["fr-CA", "en-US"],
        86..=89 => &["de-AT", "de-DE"],
        90..=94 => &["es-ES"],
        95..=97 => &["es-MX", "en-US"],
        _ => &["it-IT", "en-US"],
    }
}

fn devices(
    spec: &DatasetSpec,
    mailboxes: &mut [Mailbox],
    taken: &mut HashMap<String, u32>,
    org_domain: &str,
) -> Vec<Option<EasDevice>> {
    let mut rng = Rng::stream(spec.seed, streams::DEVICES);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(spec.devices);
    for seq in 0..spec.devices as u32 {
        // About 1 % belong to users who left: the partnership outlives the mailbox.
        let owner = if rng.chance(10) {
            let p = person(&mut rng, taken);
            Owner::Departed(Box::new(Departed {
                display_name: format!("{} {}", p.first, p.last).into_boxed_str(),
                upn: format!("{}@{org_domain}", p.alias).into_boxed_str(),
                alias: p.alias.into_boxed_str(),
                user_id: rng.guid(),
            }))
        } else {
            Owner::Mailbox(rng.below(mailboxes.len() as u64) as u32)
        };
        let mut dev = new_device(&mut rng, spec.seed, seq, owner.clone());
        while !seen.insert(dev.device_id.to_ascii_lowercase()) {
            dev = new_device(&mut rng, spec.seed, seq, owner.clone());
        }
        dev.first_sync = spec
            .anchor
            .minus_days(rng.range(1, 700))
            .plus_secs(rng.range(0, 86_399));
        dev.last_sync = if rng.chance(850) {
            spec.anchor.plus_secs(-rng.range(60, 3 * 86_400))
        } else {
            spec.anchor.minus_days(rng.range(4, 120))
        };
        dev.last_sync = dev.last_sync.max(dev.first_sync);
        dev.when_changed = dev.first_sync;
        dev.discovered = !rng.chance(3);
        if let Owner::Mailbox(ix) = dev.owner {
            mailboxes[ix as usize].devices.push(seq);
        }
        out.push(Some(dev));
    }
    out
}

/// Allow/block entries that predate the connector, some stale, some in another case.
fn seed_lists(spec: &DatasetSpec, mailboxes: &mut [Mailbox], devices: &[Option<EasDevice>]) {
    let mut rng = Rng::stream(spec.seed, streams::LISTS);
    for m in mailboxes.iter_mut() {
        if m.devices.is_empty() {
            continue;
        }
        let entry = |rng: &mut Rng| {
            let seq = *rng.pick(&m.devices);
            let id = devices[seq as usize]
                .as_ref()
                .map_or_else(String::new, |d| d.device_id.to_string());
            let id = if rng.chance(200) {
                id.to_ascii_lowercase()
            } else {
                id
            };
            id.into_boxed_str()
        };
        if rng.chance(40) {
            let e = entry(&mut rng);
            m.allowed.push(e);
        }
        if rng.chance(10) {
            let e = entry(&mut rng);
            m.blocked.push(e);
        }
        if rng.chance(5) {
            m.allowed
                .push(format!("Appl{}", draw_chars(&mut rng, ALNUM_UPPER, 11)).into_boxed_str());
        }
    }
}

fn managed_devices(
    spec: &DatasetSpec,
    mailboxes: &[Mailbox],
    devices: &[Option<EasDevice>],
) -> Vec<ManagedDevice> {
    let mut rng = Rng::stream(spec.seed, streams::INTUNE);
    let compliance = [
        (ComplianceState::Compliant, 780),
        (ComplianceState::Noncompliant, 100),
        (ComplianceState::InGracePeriod, 50),
        (ComplianceState::Unknown, 20),
        (ComplianceState::Conflict, 20),
        (ComplianceState::Error, 20),
        (ComplianceState::ConfigManager, 10),
    ];
    let weights: Vec<u32> = compliance.iter().map(|c| c.1).collect();
    let mut out = Vec::new();
    let record = |rng: &mut Rng,
                  owner: Owner,
                  profile: u16,
                  build: u8,
                  derive: u64,
                  eas: Option<(&str, u32)>,
                  since: Utc| {
        let state = compliance[rng.weighted(&weights)].0;
        // Strictly before the anchor, so "changed since the anchor" starts out empty.
        let enrolled = since
            .plus_secs(rng.range(0, 3 * 86_400))
            .min(spec.anchor.plus_secs(-3600));
        let last_sync = if rng.chance(900) {
            spec.anchor.plus_secs(-rng.range(60, 2 * 86_400))
        } else {
            spec.anchor.minus_days(rng.range(3, 90))
        }
        .max(enrolled);
        let p = &PROFILES[usize::from(profile)];
        let company = rng.chance(if p.platform == Platform::Windows {
            950
        } else {
            400
        });
        ManagedDevice {
            seq: 0,
            id: rng.guid(),
            azure_ad_device_id: rng.guid(),
            owner,
            eas_device_id: eas.map_or("", |e| e.0).into(),
            eas_seq: eas.map(|e| e.1),
            profile,
            build,
            derive,
            compliance: state,
            owner_type: if company {
                OwnerType::Company
            } else {
                OwnerType::Personal
            },
            management_state: if rng.chance(15) {
                ManagementState::RetirePending
            } else {
                ManagementState::Managed
            },
            enrolled,
            last_sync,
            eas_activated_at: if eas.is_some() { enrolled } else { Utc::NEVER },
            grace_expiry: if state == ComplianceState::InGracePeriod {
                spec.anchor.plus_secs(rng.range(3600, 5 * 86_400))
            } else {
                Utc::NO_DEADLINE
            },
        }
    };

    for dev in devices.iter().flatten() {
        let p = dev.profile();
        let per_mille = match dev.owner {
            Owner::Mailbox(_) => p.enroll_per_mille,
            // Stale records of people who left are rarer.
            _ => p.enroll_per_mille / 8,
        };
        if !rng.chance(per_mille) {
            continue;
        }
        // Intune sometimes spells the id in another case than Exchange (older Android clients
        // report it lowercase to one and uppercase to the other); matching must ignore case.
        let spelled = if dev.device_id.starts_with("androidc") && rng.chance(300) {
            dev.device_id.to_ascii_uppercase()
        } else {
            dev.device_id.to_string()
        };
        out.push(record(
            &mut rng,
            dev.owner.clone(),
            dev.profile,
            dev.build,
            dev.derive,
            Some((&spelled, dev.seq)),
            dev.first_sync,
        ));
    }

    // Laptops: managed, no EAS partnership. And records whose partnership was removed.
    let only_weights: Vec<u32> = PROFILES.iter().map(|p| p.intune_only_weight).collect();
    let laptops = spec.devices / 10;
    let stale = spec.devices / 200;
    for i in 0..laptops + stale {
        let owner = Owner::Mailbox(rng.below(mailboxes.len() as u64) as u32);
        let since = spec.anchor.minus_days(rng.range(1, 900));
        let derive = mix(spec.seed ^ 0x1a97_0000 ^ i as u64);
        if i < laptops {
            let profile = rng.weighted(&only_weights) as u16;
            // Shared and kiosk machines are enrolled without a user.
            let owner = if rng.chance(150) {
                Owner::Nobody
            } else {
                owner
            };
            out.push(record(&mut rng, owner, profile, 0, derive, None, since));
        } else {
            let orphan = new_device(&mut rng, spec.seed, u32::MAX, owner.clone());
            let mut md = record(
                &mut rng,
                owner,
                orphan.profile,
                orphan.build,
                derive,
                Some((&orphan.device_id, 0)),
                since,
            );
            md.eas_seq = None;
            out.push(md);
        }
    }

    // Intune lists devices in its own order, not in Exchange's.
    rng.shuffle(&mut out);
    for (seq, md) in out.iter_mut().enumerate() {
        md.seq = seq as u32;
    }
    out
}

fn groups(spec: &DatasetSpec, mailboxes: &[Mailbox]) -> Vec<Group> {
    let mut rng = Rng::stream(spec.seed, streams::GROUPS);
    let mut group = |name: &str| Group {
        id: rng.guid(),
        display_name: name.into(),
        mail_nickname: name.replace(' ', "").into(),
        users: Vec::new(),
        groups: Vec::new(),
    };
    let mut all = vec![group("All Staff")];
    for (name, _) in DEPARTMENTS {
        all.push(group(name));
    }
    let mobile_team = all.len();
    all.push(group("Mobile Team"));
    let platform_team = all.len();
    all.push(group("Platform Team"));
    let executives = all.len();
    all.push(group("Executives"));
    let exempt = all.len();
    all.push(group("Mobile Access Exempt"));
    let contractors = all.len();
    all.push(group("Contractors"));

    all[0].groups = (1..=DEPARTMENTS.len() as u32).collect();
    let engineering = 1 + usize::from(ENGINEERING);
    all[engineering].groups = vec![mobile_team as u32, platform_team as u32];
    // Exempt users are listed directly and through the (nested) Executives group.
    all[exempt].groups = vec![executives as u32];

    for (ix, m) in mailboxes.iter().enumerate() {
        let ix = ix as u32;
        let dept = 1 + usize::from(m.department);
        if m.department == ENGINEERING {
            match rng.below(10) {
                0..=2 => all[mobile_team].users.push(ix),
                3..=5 => all[platform_team].users.push(ix),
                _ => all[dept].users.push(ix),
            }
        } else {
            all[dept].users.push(ix);
        }
        if rng.chance(5) || ix == 0 {
            all[executives].users.push(ix);
        }
        if rng.chance(3) || ix == 1 {
            all[exempt].users.push(ix);
        }
        if rng.chance(20) {
            all[contractors].users.push(ix);
        }
    }
    all
}

/// Generates the organization for `spec`, with every device's access state computed.
pub(crate) fn generate(spec: &DatasetSpec) -> Org {
    let tenant = tenant(spec.seed);
    let mut taken = HashMap::new();
    let mut mailboxes = mailboxes(spec, &tenant.domain, &mut taken);
    let devices = devices(spec, &mut mailboxes, &mut taken, &tenant.domain);
    seed_lists(spec, &mut mailboxes, &devices);
    let managed = managed_devices(spec, &mailboxes, &devices);
    let groups = groups(spec, &mailboxes);
    let mut user_groups = vec![Vec::new(); mailboxes.len()];
    for (g, group) in groups.iter().enumerate() {
        for &u in &group.users {
            user_groups[u as usize].push(g as u32);
        }
    }

    let mut mailbox_index = HashMap::with_capacity(mailboxes.len() * 5);
    for (ix, m) in mailboxes.iter().enumerate() {
        for key in [
            m.alias.to_string(),
            m.upn.to_string(),
            m.primary_smtp.to_string(),
            m.guid.to_string(),
            m.user_id.to_string(),
        ] {
            mailbox_index.insert(Org::mailbox_key(&key), ix as u32);
        }
    }
    let device_index = devices
        .iter()
        .flatten()
        .map(|d| (Org::mailbox_key(&d.device_id), d.seq))
        .collect();
    let created = spec.anchor.minus_days(400);
    let rules = vec![
        DeviceRule {
            guid: Rng::stream(spec.seed, 0x7001).guid(),
            characteristic: Characteristic::DeviceType,
            query: "WP8".into(),
            level: AccessLevel::Block,
            when_created: created,
            when_changed: created,
        },
        DeviceRule {
            guid: Rng::stream(spec.seed, 0x7002).guid(),
            characteristic: Characteristic::DeviceModel,
            query: "SM-G960F".into(),
            level: AccessLevel::Quarantine,
            when_created: created,
            when_changed: created,
        },
    ];
    let mut org = Org {
        settings: OrgSettings {
            default_access: AccessLevel::Allow,
            admin_mail_recipients: vec![format!("mobile-admins@{}", tenant.domain).into()],
            user_mail_insert: "".into(),
            ota_notification_mail_insert: "".into(),
            allow_access_for_unsupported_platform: true,
            when_changed: created,
        },
        tenant,
        rules,
        mailboxes,
        mailbox_index,
        devices,
        device_index,
        managed: Vec::new(),
        managed_by_eas: HashMap::new(),
        user_groups,
        groups,
        arrivals: Rng::stream(spec.seed, streams::ARRIVALS),
        seed: spec.seed,
    };
    for md in managed {
        org.insert_managed(md);
    }
    // Generated devices start with the state they have had since they were last evaluated.
    for seq in 0..org.devices.len() as u32 {
        let first_sync = org.device(seq).map(|d| d.first_sync);
        if let Some(t) = first_sync {
            org.recompute_device(seq, t);
        }
    }
    org
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(devices: usize) -> DatasetSpec {
        DatasetSpec {
            seed: 42,
            devices,
            anchor: Utc::from_ymd_hms(2025, 6, 1, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn same_seed_same_org() {
        let a = generate(&spec(500));
        let b = generate(&spec(500));
        assert_eq!(a.truth(), b.truth());
        assert_eq!(a.tenant.client_secret, b.tenant.client_secret);
        let c = generate(&DatasetSpec {
            seed: 43,
            ..spec(500)
        });
        assert_ne!(a.truth(), c.truth());
    }

    #[test]
    fn users_languages_vary_and_most_are_unset() {
        let org = generate(&spec(10_000));
        let count = |language: Option<&str>| {
            org.mailboxes
                .iter()
                .filter(|m| m.preferred_language == language)
                .count()
        };
        let unset = count(None);
        assert!((1_700..2_300).contains(&unset), "unset {unset}");
        for language in ["en-US", "de-DE", "fr-FR", "en-GB", "es-ES"] {
            assert!(count(Some(language)) > 100, "{language}");
        }
    }

    #[test]
    fn mailbox_languages_vary_and_a_third_are_empty() {
        let org = generate(&spec(10_000));
        let count = |first: Option<&str>| {
            org.mailboxes
                .iter()
                .filter(|m| m.languages.first().copied() == first)
                .count()
        };
        let (empty, all) = (count(None), org.mailboxes.len());
        assert!(
            (all * 30 / 100..all * 40 / 100).contains(&empty),
            "empty {empty} of {all}"
        );
        for language in [
            "en-US", "de-DE", "fr-FR", "fr-CA", "de-AT", "es-ES", "it-IT",
        ] {
            assert!(count(Some(language)) > 100, "{language}");
        }
        // Independent of Graph's preferredLanguage: some users have only the mailbox's.
        assert!(
            org.mailboxes
                .iter()
                .any(|m| m.preferred_language.is_none() && m.languages.first() == Some(&"fr-FR"))
        );
    }

    #[test]
    fn mix_is_realistic() {
        let org = generate(&spec(10_000));
        let devices: Vec<_> = org.devices.iter().flatten().collect();
        assert_eq!(devices.len(), 10_000);
        assert_eq!(org.mailboxes.len(), 5_000);

        let enrolled = devices
            .iter()
            .filter(|d| org.managed_by_eas_id(&d.device_id).is_some())
            .count();
        assert!((6_000..8_000).contains(&enrolled), "enrolled {enrolled}");

        let managed: Vec<_> = org.managed.iter().flatten().collect();
        for state in ComplianceState::ALL {
            assert!(managed.iter().any(|m| m.compliance == *state), "{state}");
        }
        let types: std::collections::HashSet<_> =
            devices.iter().map(|d| d.profile().eas_type).collect();
        for t in [
            "iPhone",
            "iPad",
            "Android",
            "Outlook",
            "SAMSUNGSMS911B",
            "WP8",
        ] {
            assert!(types.contains(t), "{t}");
        }
        assert!(managed.iter().any(|m| m.eas_device_id.is_empty()));
        assert!(
            managed
                .iter()
                .any(|m| !m.eas_device_id.is_empty() && m.eas_seq.is_none())
        );
        assert!(managed.iter().any(|m| {
            m.eas_seq
                .and_then(|s| org.device(s))
                .is_some_and(|d| *d.device_id != *m.eas_device_id)
        }));

        let departed = devices
            .iter()
            .filter(|d| matches!(d.owner, Owner::Departed(_)))
            .count();
        assert!(departed > 20, "departed {departed}");
        assert!(org.mailboxes.iter().any(|m| m.upn != m.primary_smtp));
        assert!(org.mailboxes.iter().any(|m| !m.allowed.is_empty()));
        assert!(org.mailboxes.iter().any(|m| !m.blocked.is_empty()));

        for state in [
            AccessState::Allowed,
            AccessState::Blocked,
            AccessState::Quarantined,
            AccessState::DeviceDiscovery,
        ] {
            assert!(devices.iter().any(|d| d.state == state), "{state}");
        }
        assert!(org.groups.iter().any(|g| !g.groups.is_empty()));
    }

    #[test]
    fn tiny_orgs_are_whole() {
        for n in [0, 1, 2] {
            let org = generate(&spec(n));
            assert_eq!(org.devices.len(), n);
            assert_eq!(org.mailboxes.len(), n.div_ceil(2).max(1));
            assert!(
                org.groups
                    .iter()
                    .all(|g| g.users.iter().all(|&u| (u as usize) < org.mailboxes.len()))
            );
        }
    }

    #[test]
    fn device_ids_are_unique_case_insensitively() {
        let org = generate(&spec(20_000));
        assert_eq!(org.device_index.len(), 20_000);
    }
}
