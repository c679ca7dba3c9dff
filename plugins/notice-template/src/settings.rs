//! The settings: which templates to use, for everyone and per locale.
//!
//! ```json
//! {
//!   "subject": "…", "html": "…", "text": "…",
//!   "locales": { "de-DE": { "subject": "…", "html": "…", "text": "…" } }
//! }
//! ```
//!
//! Every key is optional. A part is looked up in the user's locale first (the exact tag, then
//! its language alone: `de-AT` falls back to `de`), then at the top level, then in the built-in
//! English defaults (`defaults/`). The built-in defaults leave out their "Step-by-step
//! instructions" link line when the notice has no remediation URL; an operator's own templates
//! are rendered as written.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::easgate::policy::types::{Message, Notice};
use crate::template::{Escape, Template};

const DEFAULT_SUBJECT: &str =
    "Action required: {{organization}} email on {{device_name}} was {{verdict}}";
const DEFAULT_HTML: &str = include_str!("../defaults/html.html");
const DEFAULT_TEXT: &str = include_str!("../defaults/text.txt");

/// What `configure` compiled from the settings.
#[derive(Debug)]
pub struct Templates {
    subject: Part,
    html: Part,
    text: Part,
    /// Keyed by the lowercase tag, `-`-separated.
    locales: BTreeMap<String, Overrides>,
}

/// A locale's replacements for some of the parts.
#[derive(Debug, Default)]
struct Overrides {
    subject: Option<Part>,
    html: Option<Part>,
    text: Option<Part>,
}

/// One part of the message.
#[derive(Debug)]
struct Part {
    template: Template,
    /// For a built-in default, the same template without its lines that show the
    /// remediation URL, used when the host has none to give.
    without_link: Option<Template>,
}

impl Part {
    fn builtin(source: &str, name: &str) -> Self {
        let mut without_link = String::with_capacity(source.len());
        let mut after_blank = false;
        for line in source.split_inclusive('\n') {
            let blank = line.trim().is_empty();
            // Dropping the link's paragraph must not leave two blank lines in a row.
            if line.contains("{{remediation_url}}") || (blank && after_blank) {
                continue;
            }
            without_link.push_str(line);
            after_blank = blank;
        }
        Self {
            template: compile_builtin(source, name),
            without_link: Some(compile_builtin(&without_link, name)),
        }
    }

    fn render(&self, notice: &Notice, escape: Escape) -> String {
        let template = match &self.without_link {
            Some(without_link) if notice.remediation_url.is_empty() => without_link,
            _ => &self.template,
        };
        template.render(notice, escape)
    }
}

fn compile_builtin(source: &str, name: &str) -> Template {
    Template::compile(source, name).expect("the built-in templates compile (unit-tested)")
}

impl Templates {
    pub fn render(&self, notice: &Notice) -> Message {
        let overrides = self.overrides(&notice.locale);
        let subject = overrides.and_then(|o| o.subject.as_ref());
        let html = overrides.and_then(|o| o.html.as_ref());
        let text = overrides.and_then(|o| o.text.as_ref());
        Message {
            subject: subject
                .unwrap_or(&self.subject)
                .render(notice, Escape::Subject),
            html: html.unwrap_or(&self.html).render(notice, Escape::Html),
            text: text.unwrap_or(&self.text).render(notice, Escape::Text),
        }
    }

    fn overrides(&self, locale: &str) -> Option<&Overrides> {
        if self.locales.is_empty() {
            return None;
        }
        let tag = normalize_tag(locale);
        let language = tag.split('-').next().unwrap_or_default();
        self.locales
            .get(&tag)
            .or_else(|| self.locales.get(language))
    }
}

/// `de_de` and `DE-de` are `de-de`: tags are case-insensitive, and `_` is a common misspelling.
fn normalize_tag(tag: &str) -> String {
    tag.trim().to_ascii_lowercase().replace('_', "-")
}

pub fn parse(settings: &str) -> Result<Templates, String> {
    let value: Value =
        serde_json::from_str(settings).map_err(|err| format!("settings: not valid JSON: {err}"))?;
    let mut templates = Templates {
        subject: Part::builtin(DEFAULT_SUBJECT, "default subject"),
        html: Part::builtin(DEFAULT_HTML, "default html"),
        text: Part::builtin(DEFAULT_TEXT, "default text"),
        locales: BTreeMap::new(),
    };
    for (key, value) in object(&value, "settings")? {
        match key.as_str() {
            "subject" => templates.subject = part(value, key, true)?,
            "html" => templates.html = part(value, key, false)?,
            "text" => templates.text = part(value, key, false)?,
            "locales" => templates.locales = locales(value)?,
            _ => {
                return Err(format!(
                    "{key}: unknown setting; the settings are subject, html, text and locales"
                ));
            }
        }
    }
    Ok(templates)
}

fn locales(value: &Value) -> Result<BTreeMap<String, Overrides>, String> {
    let mut locales = BTreeMap::new();
    for (tag, value) in object(value, "locales")? {
        let path = format!("locales.{tag}");
        let key = normalize_tag(tag);
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!(
                "{path}: not a language tag; use one like \"de\" or \"de-DE\""
            ));
        }
        let mut overrides = Overrides::default();
        for (part_name, value) in object(value, &path)? {
            let path = format!("{path}.{part_name}");
            match part_name.as_str() {
                "subject" => overrides.subject = Some(part(value, &path, true)?),
                "html" => overrides.html = Some(part(value, &path, false)?),
                "text" => overrides.text = Some(part(value, &path, false)?),
                _ => {
                    return Err(format!(
                        "{path}: unknown key; a locale has subject, html and text"
                    ));
                }
            }
        }
        if locales.insert(key, overrides).is_some() {
            return Err(format!(
                "{path}: the same locale is already configured under another spelling"
            ));
        }
    }
    Ok(locales)
}

/// An operator's template for one part; `path` names it in errors.
fn part(value: &Value, path: &str, one_line: bool) -> Result<Part, String> {
    let source = match value.as_str() {
        Some(source) if !source.trim().is_empty() => source,
        _ => return Err(expected(path, "a non-empty template string", value)),
    };
    if one_line && source.contains(['\r', '\n']) {
        return Err(format!(
            "{path}: a subject is one line; remove its line breaks"
        ));
    }
    Ok(Part {
        template: Template::compile(source, path)?,
        without_link: None,
    })
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| expected(path, "an object", value))
}

fn expected(path: &str, what: &str, got: &Value) -> String {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(s) if s.trim().is_empty() => "an empty string",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("{path}: expected {what}, got {kind}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::tests::notice;

    #[test]
    fn defaults_render_a_complete_notice() {
        let message = parse("{}").unwrap().render(&notice());
        assert_eq!(
            message.subject,
            "Action required: Contoso email on iPhone15,2 <b>\"x\" & 'y' was quarantined"
        );
        for body in [&message.text, &message.html] {
            assert!(body.contains("Hello alice@contoso.com,"), "{body}");
            assert!(body.contains("because it is not enrolled in device management."));
            assert!(body.contains("Step-by-step instructions:"));
        }
        assert!(
            message
                .text
                .contains("https://portal.example/enroll?a=1&b=2")
        );
        assert!(
            message
                .html
                .contains("<a href=\"https://portal.example/enroll?a=1&amp;b=2\">")
        );
        assert!(message.html.contains("iPhone15,2 &lt;b&gt;"));
        assert!(!message.html.contains("<b>"));
    }

    #[test]
    fn defaults_drop_the_link_line_without_a_url() {
        let mut notice = notice();
        notice.remediation_url.clear();
        let message = parse("{}").unwrap().render(&notice);
        assert!(message.subject.starts_with("Action required") && !message.subject.contains('\n'));
        assert!(message.html.ends_with("</html>\n"));
        for body in [&message.text, &message.html] {
            assert!(!body.contains("Step-by-step instructions"), "{body}");
            assert!(!body.contains("\n\n\n"), "{body}");
            assert!(body.contains("open the Company Portal app"));
        }
        // An operator's template is rendered as written.
        let own = parse(r#"{"text": "Go to [{{remediation_url}}]"}"#).unwrap();
        assert_eq!(own.render(&notice).text, "Go to []");
    }

    #[test]
    fn locale_overrides_fall_back_part_by_part() {
        let templates = parse(
            r#"{
                "text": "top {{user}}",
                "locales": {
                    "de": {"subject": "Gerät {{device_id}} gesperrt"},
                    "fr-CA": {"text": "bonjour {{user}}"}
                }
            }"#,
        )
        .unwrap();
        let render = |locale: &str| {
            let mut notice = notice();
            notice.locale = locale.into();
            let message = templates.render(&notice);
            (message.subject, message.text)
        };
        let default_subject = render("en-US").0;
        assert!(default_subject.starts_with("Action required"));
        assert_eq!(render("en-US").1, "top alice@contoso.com");
        assert_eq!(
            render("de-AT"),
            (
                "Gerät ABC123 gesperrt".into(),
                "top alice@contoso.com".into()
            )
        );
        assert_eq!(render("FR_ca").1, "bonjour alice@contoso.com");
        assert_eq!(render("fr").1, "top alice@contoso.com");
        assert_eq!(render("").0, default_subject);
    }

    #[test]
    fn errors_name_the_template() {
        let cases = [
            ("[]", "settings: expected an object, got an array"),
            (r#"{"body": "x"}"#, "body: unknown setting"),
            (
                r#"{"html": ""}"#,
                "html: expected a non-empty template string, got an empty string",
            ),
            (
                r#"{"text": 1}"#,
                "text: expected a non-empty template string, got a number",
            ),
            (r#"{"subject": "a\nb"}"#, "subject: a subject is one line"),
            (
                r#"{"html": "<p>{{device}}</p>"}"#,
                "html: unknown placeholder {{device}}",
            ),
            (
                r#"{"locales": {"de": {"text": "{{user"}}}"#,
                "locales.de.text: unclosed {{ on line 1",
            ),
            (
                r#"{"locales": {"de": {"body": "x"}}}"#,
                "locales.de.body: unknown key",
            ),
            (
                r#"{"locales": {"de DE": {}}}"#,
                "locales.de DE: not a language tag",
            ),
            (
                r#"{"locales": {"de-de": {}, "de_DE": {}}}"#,
                "locales.de_DE: the same locale",
            ),
        ];
        for (settings, want) in cases {
            let err = parse(settings).unwrap_err();
            assert!(
                err.starts_with(want),
                "{settings}: got {err:?}, want {want:?}"
            );
        }
    }
}
