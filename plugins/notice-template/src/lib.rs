//! easgate's built-in notice template, a Wasm component of the `notice-template` world.
//!
//! It renders the mail a user gets when a policy blocks or quarantines one of their devices:
//! what happened to which device, why, and the steps to get access back. Operators can replace
//! any part (subject, HTML, text) with their own `{{name}}` template, for all users or per
//! locale; see [`settings`] for the keys and [`template`] for the syntax and the variables.

mod settings;
mod template;

use std::sync::{Mutex, PoisonError};

use settings::Templates;

wit_bindgen::generate!({ path: "../../wit", world: "notice-template" });

/// The templates `configure` compiled; the host calls it on every fresh instance before its
/// one `render`.
static TEMPLATES: Mutex<Option<Templates>> = Mutex::new(None);

struct NoticeTemplate;

impl Guest for NoticeTemplate {
    fn configure(settings: String) -> Result<(), String> {
        let templates = settings::parse(&settings)?;
        *TEMPLATES.lock().unwrap_or_else(PoisonError::into_inner) = Some(templates);
        Ok(())
    }

    fn render(notice: Notice) -> Result<Message, String> {
        let templates = TEMPLATES.lock().unwrap_or_else(PoisonError::into_inner);
        let templates = templates
            .as_ref()
            .ok_or("render was called before configure")?;
        Ok(templates.render(&notice))
    }
}

export!(NoticeTemplate);
