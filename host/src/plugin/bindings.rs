//! Host bindings generated from `wit/` for both plugin worlds.
//!
//! The notice-template world reuses the access-policy world's `types` and `host` interfaces, so
//! a device context is one Rust type whichever plugin it is sent to.

pub mod access {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "access-policy",
        additional_derives: [PartialEq],
    });
}

pub mod notice {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "notice-template",
        with: {
            "easgate:policy/types": super::access::easgate::policy::types,
            "easgate:policy/host": super::access::easgate::policy::host,
        },
    });
}

pub use access::easgate::policy::host::Level;
pub use access::easgate::policy::types;
