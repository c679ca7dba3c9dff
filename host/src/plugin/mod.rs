//! Plugins: the access policy and the notice template, as sandboxed WebAssembly components.
//!
//! * [`engine`]: the one wasmtime engine, its epoch ticker (CPU deadlines) and linkers.
//! * `cache`: the optional compile cache, compiled versions on disk keyed by digest and
//!   engine configuration.
//! * [`sandbox`]: what a running plugin can reach (nothing but `host.log`), memory limits,
//!   captured output.
//! * [`loaded`]: a compiled, pre-instantiated, configured plugin version and its calls.
//! * [`manifest`]: `NAME.toml` beside `NAME.wasm` (world, settings, limits, self-checks).
//! * [`registry`]: the built-in and directory plugins, which version is active, hot reload.
//! * [`org_policy`]: an organization's own policy: a plugin version bound to its settings.
//! * [`json`]: the JSON form of the WIT records, for the CLI and for manifest cases.
//! * [`wit`]: the ground floor's types ([`crate::model`]) in the contract's form.
//!
//! The contract itself lives in `wit/` at the repository root; `bindings` is generated from it.

pub mod bindings;
mod cache;
pub mod engine;
pub mod json;
pub mod loaded;
pub mod manifest;
pub mod org_policy;
pub mod registry;
pub mod sample;
pub mod sandbox;
pub mod wit;

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use bindings::types;
pub use engine::{Compilation, CompiledFrom, Limits, PluginEngine};
pub use loaded::{AccessPolicyPlugin, NoticeTemplatePlugin, PluginMeta, Source, Verdicts};
pub use registry::PluginRegistry;
pub use sandbox::PluginLogLine;

/// The two worlds of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    AccessPolicy,
    NoticeTemplate,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::AccessPolicy => "access-policy",
            World::NoticeTemplate => "notice-template",
        }
    }

    /// The built-in plugin of this world, used when nothing else is configured or loadable.
    pub fn builtin_name(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SHA-256 of a plugin's bytes: the identity of a plugin version in logs and the audit trail.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads `sha256:` and 64 hex digits (either case), the form [`Display`](fmt::Display)
    /// writes.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("sha256:")?.as_bytes();
        // `from_str_radix` alone would take a sign ("+f").
        if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// The first 12 hex digits, enough to tell versions apart in messages.
    pub fn short(&self) -> String {
        self.hex()[..12].to_owned()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.short())
    }
}

/// Names a plugin version in errors: `"byod-strict" (sha256:0123456789ab)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginId {
    pub name: String,
    pub digest: Digest,
}

impl fmt::Display for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin {:?} (sha256:{})", self.name, self.digest.short())
    }
}

/// Everything that can go wrong loading or calling a plugin. Each names the plugin version.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{plugin}: {path}: {source}")]
    Read {
        plugin: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(
        "{plugin}: is a core WebAssembly module, not a component; build it for wasm32-wasip2 \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule { plugin: PluginId },
    #[error("{plugin}: is not a valid WebAssembly component: {detail}")]
    Compile { plugin: PluginId, detail: String },
    #[error("{plugin}: does not implement the {world} world of easgate:policy: {detail}")]
    WrongWorld {
        plugin: PluginId,
        world: World,
        detail: String,
    },
    #[error("{plugin}: the manifest says world {manifest}, but the component exports {actual}")]
    ManifestWorld {
        plugin: PluginId,
        manifest: World,
        actual: World,
    },
    #[error("{plugin}: configure rejected its settings: {message}")]
    Configure { plugin: PluginId, message: String },
    #[error("{plugin}: {call} ran past its deadline of {timeout_ms} ms and was stopped")]
    Timeout {
        plugin: PluginId,
        call: &'static str,
        timeout_ms: u128,
    },
    #[error("{plugin}: {call} exceeded the memory limit of {limit_mib} MiB and was stopped")]
    MemoryLimit {
        plugin: PluginId,
        call: &'static str,
        limit_mib: usize,
    },
    /// `code`: wasmtime's trap code; `None` when the call failed in host code rather than the
    /// guest trapping by itself (a host function refused it: the plugin tried to wait, say).
    #[error("{plugin}: {call} trapped: {detail}")]
    Trap {
        plugin: PluginId,
        call: &'static str,
        code: Option<wasmtime::Trap>,
        detail: String,
    },
    #[error(
        "{plugin}: decide returned {got} decisions for {expected} devices; the batch is rejected"
    )]
    WrongCount {
        plugin: PluginId,
        expected: usize,
        got: usize,
    },
    #[error(
        "{plugin}: decide returned an invalid reason {reason:?} for device {index}; reasons are \
         1 to 64 characters out of a-z, 0-9 and '-'; the batch is rejected"
    )]
    InvalidReason {
        plugin: PluginId,
        index: usize,
        reason: String,
    },
    #[error("{plugin}: self-check {case:?} failed: {detail}")]
    SelfCheck {
        plugin: PluginId,
        case: String,
        detail: String,
    },
    #[error("{plugin}: render returned an invalid message: {detail}")]
    InvalidMessage { plugin: PluginId, detail: String },
    #[error("{plugin}: render refused the notice: {message}")]
    Render { plugin: PluginId, message: String },
}

/// What kind of failure a [`PluginError`] is: the `kind` label of `/metrics`' plugin errors,
/// a small fixed set an operator can alert on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginErrorKind {
    /// The guest trapped (a panic, an out-of-bounds access, a stack overflow, …).
    Trap,
    /// The call failed in host code without a trap code: a host function refused what the
    /// plugin asked (waiting, sleeping).
    HostRefused,
    /// The call ran past its epoch deadline.
    Timeout,
    /// The plugin grew past its memory limit.
    Memory,
    /// The call returned, but its answer breaks the contract (decision count, reason, message).
    BadOutput,
    /// `configure` rejected the plugin's settings.
    Configure,
    /// The notice template refused to render a notice.
    RenderRefused,
    /// A manifest self-check gave another answer than the manifest expects (load time).
    SelfCheck,
    /// The version cannot be used at all: unreadable, not a component, wrong world (load time).
    Invalid,
    /// The version's digest is not in `sync.allowed_digests` (load time, before compiling).
    NotAllowed,
}

impl PluginErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginErrorKind::Trap => "trap",
            PluginErrorKind::HostRefused => "host-refused",
            PluginErrorKind::Timeout => "timeout",
            PluginErrorKind::Memory => "memory",
            PluginErrorKind::BadOutput => "bad-output",
            PluginErrorKind::Configure => "configure",
            PluginErrorKind::RenderRefused => "render-refused",
            PluginErrorKind::SelfCheck => "self-check",
            PluginErrorKind::Invalid => "invalid",
            PluginErrorKind::NotAllowed => "not-allowed",
        }
    }
}

impl PluginError {
    /// The kind of failure, from the variant (and for traps, wasmtime's trap code).
    pub fn kind(&self) -> PluginErrorKind {
        match self {
            PluginError::Read { .. }
            | PluginError::Manifest(_)
            | PluginError::CoreModule { .. }
            | PluginError::Compile { .. }
            | PluginError::WrongWorld { .. }
            | PluginError::ManifestWorld { .. } => PluginErrorKind::Invalid,
            PluginError::Configure { .. } => PluginErrorKind::Configure,
            PluginError::Timeout { .. } => PluginErrorKind::Timeout,
            PluginError::MemoryLimit { .. } => PluginErrorKind::Memory,
            PluginError::Trap { code: Some(_), .. } => PluginErrorKind::Trap,
            PluginError::Trap { code: None, .. } => PluginErrorKind::HostRefused,
            PluginError::WrongCount { .. }
            | PluginError::InvalidReason { .. }
            | PluginError::InvalidMessage { .. } => PluginErrorKind::BadOutput,
            PluginError::SelfCheck { .. } => PluginErrorKind::SelfCheck,
            PluginError::Render { .. } => PluginErrorKind::RenderRefused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_prints_as_sha256_hex() {
        let digest = Digest::of(b"abc");
        assert_eq!(Digest::parse(&digest.to_string()), Some(digest));
        assert_eq!(
            Digest::parse(
                &digest
                    .to_string()
                    .to_uppercase()
                    .replace("SHA256", "sha256")
            ),
            Some(digest)
        );
        for bad in [
            digest.hex(),
            format!("sha256:{}", &digest.hex()[1..]),
            format!("sha256:+{}", &digest.hex()[1..]),
        ] {
            assert_eq!(Digest::parse(&bad), None, "{bad}");
        }
        assert_eq!(
            digest.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(digest.short(), "ba7816bf8f01");
    }

    #[test]
    fn error_kinds_follow_the_variant_and_the_trap_code() {
        let plugin = || PluginId {
            name: "p".into(),
            digest: Digest::of(b"p"),
        };
        let trap = |code| PluginError::Trap {
            plugin: plugin(),
            call: "decide",
            code,
            detail: String::new(),
        };
        let cases = [
            (trap(Some(wasmtime::Trap::UnreachableCodeReached)), "trap"),
            (trap(Some(wasmtime::Trap::StackOverflow)), "trap"),
            (trap(None), "host-refused"),
            (
                PluginError::Timeout {
                    plugin: plugin(),
                    call: "decide",
                    timeout_ms: 5,
                },
                "timeout",
            ),
            (
                PluginError::MemoryLimit {
                    plugin: plugin(),
                    call: "decide",
                    limit_mib: 1,
                },
                "memory",
            ),
            (
                PluginError::WrongCount {
                    plugin: plugin(),
                    expected: 2,
                    got: 1,
                },
                "bad-output",
            ),
            (
                PluginError::InvalidReason {
                    plugin: plugin(),
                    index: 0,
                    reason: "x".repeat(80),
                },
                "bad-output",
            ),
            (
                PluginError::InvalidMessage {
                    plugin: plugin(),
                    detail: String::new(),
                },
                "bad-output",
            ),
            (
                PluginError::Configure {
                    plugin: plugin(),
                    message: String::new(),
                },
                "configure",
            ),
            (
                PluginError::Render {
                    plugin: plugin(),
                    message: String::new(),
                },
                "render-refused",
            ),
            (
                PluginError::SelfCheck {
                    plugin: plugin(),
                    case: String::new(),
                    detail: String::new(),
                },
                "self-check",
            ),
            (PluginError::CoreModule { plugin: plugin() }, "invalid"),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind().as_str(), kind, "{error}");
        }
    }
}
