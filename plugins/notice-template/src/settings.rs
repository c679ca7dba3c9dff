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
//! defaults in the user's language (`defaults/de/` German, `defaults/fr/` French,
//! `defaults/es/` Spanish; any region of these: `de-AT`, `fr-CA`, `es-MX`), then in the
//! built-in English defaults (`defaults/`), which every other language gets. The built-in
//! defaults leave out their "Step-by-step instructions" link line when the notice has no
//! remediation URL; an operator's own templates are rendered as written. `{{verdict}}` and
//! `{{reason_text}}` are written in the language of the template they appear in: a locale's
//! own (if the plugin speaks it), the defaults' language for the defaults, English otherwise.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::easgate::policy::types::{Message, Notice};
use crate::template::{Escape, Language, Template};

const DEFAULT_SUBJECT: &str =
    "Action required: {{organization}} email on {{device_name}} was {{verdict}}";
const DEFAULT_HTML: &str = include_str!("../defaults/html.html");
const DEFAULT_TEXT: &str = include_str!("../defaults/text.txt");
const GERMAN_SUBJECT: &str =
    "Handlungsbedarf: {{organization}}-E-Mail auf {{device_name}} wurde {{verdict}}";
const GERMAN_HTML: &str = include_str!("../defaults/de/html.html");
const GERMAN_TEXT: &str = include_str!("../defaults/de/text.txt");
// An administrator's device action (reason codes `admin-…`): what was done on purpose and
// what to do (the help desk, adding the account again), not how to become compliant.
const ADMIN_SUBJECT: &str =
    "{{organization}} email on {{device_name}}: an administrator acted on your device";
const ADMIN_HTML: &str = include_str!("../defaults/admin.html");
const ADMIN_TEXT: &str = include_str!("../defaults/admin.txt");
const GERMAN_ADMIN_SUBJECT: &str =
    "{{organization}}-E-Mail auf {{device_name}}: ein Administrator hat Ihr Gerät bearbeitet";
const GERMAN_ADMIN_HTML: &str = include_str!("../defaults/de/admin.html");
const GERMAN_ADMIN_TEXT: &str = include_str!("../defaults/de/admin.txt");
const FRENCH_SUBJECT: &str = "Action requise : l'accès à la messagerie {{organization}} sur {{device_name}} a été {{verdict}}";
const FRENCH_HTML: &str = include_str!("../defaults/fr/html.html");
const FRENCH_TEXT: &str = include_str!("../defaults/fr/text.txt");
const SPANISH_SUBJECT: &str = "Acción necesaria: el acceso al correo de {{organization}} en {{device_name}} se ha {{verdict}}";
const SPANISH_HTML: &str = include_str!("../defaults/es/html.html");
const SPANISH_TEXT: &str = include_str!("../defaults/es/text.txt");
const FRENCH_ADMIN_SUBJECT: &str = "Messagerie {{organization}} sur {{device_name}} : un administrateur est intervenu sur votre appareil";
const FRENCH_ADMIN_HTML: &str = include_str!("../defaults/fr/admin.html");
const FRENCH_ADMIN_TEXT: &str = include_str!("../defaults/fr/admin.txt");
const SPANISH_ADMIN_SUBJECT: &str = "Correo de {{organization}} en {{device_name}}: un administrador ha actuado sobre su dispositivo";
const SPANISH_ADMIN_HTML: &str = include_str!("../defaults/es/admin.html");
const SPANISH_ADMIN_TEXT: &str = include_str!("../defaults/es/admin.txt");

/// What `configure` compiled from the settings.
#[derive(Debug)]
pub struct Templates {
    /// The operator's own parts for every user; `None` where the built-in defaults apply.
    subject: Option<Part>,
    html: Option<Part>,
    text: Option<Part>,
    /// Keyed by the lowercase tag, `-`-separated.
    locales: BTreeMap<String, Overrides>,
    english: Builtin,
    german: Builtin,
    french: Builtin,
    spanish: Builtin,
    /// The defaults for an administrator's device action.
    english_admin: Builtin,
    german_admin: Builtin,
    french_admin: Builtin,
    spanish_admin: Builtin,
}

/// The built-in defaults of one language.
#[derive(Debug)]
struct Builtin {
    subject: Part,
    html: Part,
    text: Part,
}

impl Builtin {
    fn new(language: Language, [subject, html, text]: [&str; 3], name: &str) -> Self {
        Self {
            subject: Part::builtin(subject, &format!("{name} subject"), language),
            html: Part::builtin(html, &format!("{name} html"), language),
            text: Part::builtin(text, &format!("{name} text"), language),
        }
    }
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
    /// The language `{{verdict}}` and `{{reason_text}}` are written in.
    language: Language,
}

impl Part {
    fn builtin(source: &str, name: &str, language: Language) -> Self {
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
            language,
        }
    }

    fn render(&self, notice: &Notice, escape: Escape) -> String {
        let template = match &self.without_link {
            Some(without_link) if notice.remediation_url.is_empty() => without_link,
            _ => &self.template,
        };
        template.render(notice, escape, self.language)
    }
}

fn compile_builtin(source: &str, name: &str) -> Template {
    Template::compile(source, name).expect("the built-in templates compile (unit-tested)")
}

impl Templates {
    pub fn render(&self, notice: &Notice) -> Message {
        let overrides = self.overrides(&notice.locale);
        let admin = notice.decision.reason.starts_with("admin-");
        let builtin = match (Language::of(&notice.locale), admin) {
            (Language::German, false) => &self.german,
            (Language::French, false) => &self.french,
            (Language::Spanish, false) => &self.spanish,
            (Language::English, false) => &self.english,
            (Language::German, true) => &self.german_admin,
            (Language::French, true) => &self.french_admin,
            (Language::Spanish, true) => &self.spanish_admin,
            (Language::English, true) => &self.english_admin,
        };
        Message {
            subject: pick(
                overrides.map(|o| &o.subject),
                &self.subject,
                &builtin.subject,
            )
            .render(notice, Escape::Subject),
            html: pick(overrides.map(|o| &o.html), &self.html, &builtin.html)
                .render(notice, Escape::Html),
            text: pick(overrides.map(|o| &o.text), &self.text, &builtin.text)
                .render(notice, Escape::Text),
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

/// A part: the locale's own, else the operator's for everyone, else the built-in default.
fn pick<'a>(local: Option<&'a Option<Part>>, own: &'a Option<Part>, default: &'a Part) -> &'a Part {
    local
        .and_then(Option::as_ref)
        .or(own.as_ref())
        .unwrap_or(default)
}

/// `de_de` and `DE-de` are `de-de`: tags are case-insensitive, and `_` is a common misspelling.
fn normalize_tag(tag: &str) -> String {
    tag.trim().to_ascii_lowercase().replace('_', "-")
}

pub fn parse(settings: &str) -> Result<Templates, String> {
    let value: Value =
        serde_json::from_str(settings).map_err(|err| format!("settings: not valid JSON: {err}"))?;
    let mut templates = Templates {
        subject: None,
        html: None,
        text: None,
        locales: BTreeMap::new(),
        english: Builtin::new(
            Language::English,
            [DEFAULT_SUBJECT, DEFAULT_HTML, DEFAULT_TEXT],
            "default",
        ),
        german: Builtin::new(
            Language::German,
            [GERMAN_SUBJECT, GERMAN_HTML, GERMAN_TEXT],
            "German default",
        ),
        french: Builtin::new(
            Language::French,
            [FRENCH_SUBJECT, FRENCH_HTML, FRENCH_TEXT],
            "French default",
        ),
        spanish: Builtin::new(
            Language::Spanish,
            [SPANISH_SUBJECT, SPANISH_HTML, SPANISH_TEXT],
            "Spanish default",
        ),
        english_admin: Builtin::new(
            Language::English,
            [ADMIN_SUBJECT, ADMIN_HTML, ADMIN_TEXT],
            "device action default",
        ),
        german_admin: Builtin::new(
            Language::German,
            [GERMAN_ADMIN_SUBJECT, GERMAN_ADMIN_HTML, GERMAN_ADMIN_TEXT],
            "German device action default",
        ),
        french_admin: Builtin::new(
            Language::French,
            [FRENCH_ADMIN_SUBJECT, FRENCH_ADMIN_HTML, FRENCH_ADMIN_TEXT],
            "French device action default",
        ),
        spanish_admin: Builtin::new(
            Language::Spanish,
            [
                SPANISH_ADMIN_SUBJECT,
                SPANISH_ADMIN_HTML,
                SPANISH_ADMIN_TEXT,
            ],
            "Spanish device action default",
        ),
    };
    for (key, value) in object(&value, "settings")? {
        let english = Language::English;
        match key.as_str() {
            "subject" => templates.subject = Some(part(value, key, true, english)?),
            "html" => templates.html = Some(part(value, key, false, english)?),
            "text" => templates.text = Some(part(value, key, false, english)?),
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
        let language = Language::of(&key);
        for (part_name, value) in object(value, &path)? {
            let path = format!("{path}.{part_name}");
            match part_name.as_str() {
                "subject" => overrides.subject = Some(part(value, &path, true, language)?),
                "html" => overrides.html = Some(part(value, &path, false, language)?),
                "text" => overrides.text = Some(part(value, &path, false, language)?),
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
fn part(value: &Value, path: &str, one_line: bool, language: Language) -> Result<Part, String> {
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
        language,
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
    use crate::easgate::policy::types::Verdict;
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

    /// Regression: an administrator's wipe or removal was announced with the compliance text
    /// (Company Portal steps). Each action gets its own words and the device-action steps, in
    /// both languages.
    #[test]
    fn device_actions_get_their_own_text_without_compliance_steps() {
        let templates = parse("{}").unwrap();
        let cases = [
            (
                "admin-wipe",
                "en",
                "remote wipe",
                "add your Contoso work account",
            ),
            (
                "admin-account-wipe",
                "en",
                "rest of the device is untouched",
                "help desk",
            ),
            (
                "admin-remove",
                "en",
                "removed its mail partnership",
                "add your Contoso work account",
            ),
            (
                "admin-wipe",
                "de",
                "Fernlöschung",
                "Geschäftskonto von Contoso",
            ),
            (
                "admin-account-wipe",
                "de",
                "der Rest des Geräts bleibt unberührt",
                "IT-Helpdesk",
            ),
            (
                "admin-remove",
                "de",
                "Mailpartnerschaft entfernt",
                "erneut hinzu",
            ),
        ];
        for (reason, locale, what, todo) in cases {
            let mut notice = notice();
            notice.decision.verdict = Verdict::Block;
            notice.decision.reason = reason.into();
            notice.locale = locale.into();
            let message = templates.render(&notice);
            for body in [&message.text, &message.html] {
                assert!(body.contains(what), "{reason} {locale}: {body}");
                assert!(body.contains(todo), "{reason} {locale}: {body}");
                assert!(body.contains(reason), "{reason} {locale}: the reason code");
                assert!(
                    !body.contains("Company Portal"),
                    "{reason} {locale}: {body}"
                );
                assert!(
                    !body.contains("Unternehmensportal"),
                    "{reason} {locale}: {body}"
                );
                assert!(!body.contains("{{"), "{reason} {locale}: {body}");
            }
            assert!(!message.subject.contains('\n'));
            let expected_subject = match locale {
                "de" => "ein Administrator hat Ihr Gerät bearbeitet",
                _ => "an administrator acted on your device",
            };
            assert!(
                message.subject.ends_with(expected_subject),
                "{}",
                message.subject
            );
        }
        // An operator's own text still wins for these too.
        let own = parse(r#"{"text": "{{reason}}"}"#).unwrap();
        let mut notice = notice();
        notice.decision.reason = "admin-remove".into();
        assert_eq!(own.render(&notice).text, "admin-remove");
    }

    #[test]
    fn german_users_get_the_german_defaults_and_others_the_english_ones() {
        let templates = parse("{}").unwrap();
        let render = |locale: &str| {
            let mut notice = notice();
            notice.locale = locale.into();
            templates.render(&notice)
        };
        for locale in ["de-DE", "de-AT", "de"] {
            let message = render(locale);
            assert_eq!(
                message.subject,
                "Handlungsbedarf: Contoso-E-Mail auf iPhone15,2 <b>\"x\" & 'y' wurde unter \
                 Quarantäne gestellt",
                "{locale}"
            );
            for body in [&message.text, &message.html] {
                assert!(body.contains("Hallo alice@contoso.com,"), "{body}");
                assert!(
                    body.contains("weil es nicht in der Geräteverwaltung registriert ist."),
                    "{body}"
                );
                assert!(body.contains("Schritt-für-Schritt-Anleitung:"), "{body}");
            }
            assert!(
                message
                    .html
                    .starts_with("<!DOCTYPE html>\n<html lang=\"de\">")
            );
        }
        for locale in ["it-IT", "en-US", "", "x-klingon", "d"] {
            let message = render(locale);
            assert!(message.subject.starts_with("Action required"), "{locale}");
            assert!(
                message.text.contains("Hello alice@contoso.com,"),
                "{locale}"
            );
        }
        // Without a remediation URL the German defaults drop their link line too.
        let mut notice = notice();
        notice.locale = "de-DE".into();
        notice.remediation_url.clear();
        let text = templates.render(&notice).text;
        assert!(
            !text.contains("Schritt-für-Schritt") && !text.contains("\n\n\n"),
            "{text}"
        );
    }

    #[test]
    fn french_and_spanish_users_of_any_region_get_their_defaults() {
        let templates = parse("{}").unwrap();
        let render = |locale: &str| {
            let mut notice = notice();
            notice.locale = locale.into();
            templates.render(&notice)
        };
        let french = (
            "Action requise : l'accès à la messagerie Contoso sur iPhone15,2 <b>\"x\" & 'y' a \
             été mis en quarantaine",
            "Bonjour alice@contoso.com,",
            // Without its apostrophes, which the HTML part escapes.
            "pas inscrit dans la gestion des appareils.",
            "Instructions détaillées",
            "<html lang=\"fr\">",
        );
        let spanish = (
            "Acción necesaria: el acceso al correo de Contoso en iPhone15,2 <b>\"x\" & 'y' se ha \
             puesto en cuarentena",
            "Hola, alice@contoso.com:",
            "porque el dispositivo no está inscrito en la administración de dispositivos.",
            "Instrucciones paso a paso",
            "<html lang=\"es\">",
        );
        for (locales, (subject, hello, because, link, lang)) in [
            (["fr-FR", "fr-CA", "FR_be", "fr"], french),
            (["es-ES", "es-MX", "es-419", "ES"], spanish),
        ] {
            for locale in locales {
                let message = render(locale);
                assert_eq!(message.subject, subject, "{locale}");
                for body in [&message.text, &message.html] {
                    assert!(body.contains(hello), "{locale}: {body}");
                    assert!(body.contains(because), "{locale}: {body}");
                    assert!(body.contains(link), "{locale}: {body}");
                    assert!(
                        !body.contains("Hello") && !body.contains("because"),
                        "{body}"
                    );
                }
                assert!(message.html.contains(lang), "{locale}");
            }
        }
        // Without a remediation URL their link line goes too.
        for locale in ["fr-FR", "es-ES"] {
            let mut notice = notice();
            notice.locale = locale.into();
            notice.remediation_url.clear();
            let message = templates.render(&notice);
            for body in [&message.text, &message.html] {
                assert!(
                    !body.contains("Instructions détaillées")
                        && !body.contains("Instrucciones paso a paso")
                        && !body.contains("\n\n\n"),
                    "{body}"
                );
            }
        }
    }

    #[test]
    fn every_builtin_language_has_its_own_words_for_each_verdict_and_reason() {
        use crate::easgate::policy::types::Verdict;
        let templates = parse("{}").unwrap();
        let reasons = [
            "noncompliant",
            "not-enrolled",
            "device-rule",
            "os-too-old",
            "stale",
            "admin-wipe",
            "admin-account-wipe",
            "admin-remove",
            "some-other-policys-code",
        ];
        let verdicts = [
            Verdict::Allow,
            Verdict::Block,
            Verdict::Quarantine,
            Verdict::Exempt,
        ];
        for locale in ["en", "de", "fr", "es"] {
            let mut seen = std::collections::BTreeSet::new();
            for reason in reasons {
                for verdict in verdicts {
                    let mut notice = notice();
                    notice.locale = locale.into();
                    notice.decision.reason = reason.into();
                    notice.decision.verdict = verdict;
                    let text = templates.render(&notice).text;
                    let sentence = text.lines().nth(2).unwrap_or_default().to_owned();
                    assert!(
                        seen.insert(sentence.clone()),
                        "{locale}: repeated {sentence}"
                    );
                    // No other language's reason texts leak into this one's sentence.
                    if locale != "en" {
                        assert!(!sentence.contains(" because "), "{locale}: {sentence}");
                    }
                }
            }
        }
    }

    #[test]
    fn an_operators_own_template_wins_over_the_german_default_and_stays_english() {
        let templates = parse(r#"{"text": "{{user}}: {{verdict}}"}"#).unwrap();
        let mut notice = notice();
        notice.locale = "de-DE".into();
        let message = templates.render(&notice);
        assert_eq!(message.text, "alice@contoso.com: quarantined");
        assert!(
            message.subject.starts_with("Handlungsbedarf"),
            "{}",
            message.subject
        );
        let own_german = parse(r#"{"locales": {"de": {"text": "{{verdict}}"}}}"#).unwrap();
        assert_eq!(own_german.render(&notice).text, "unter Quarantäne gestellt");
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
