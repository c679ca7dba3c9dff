//! The built-in notice template through the real Wasm component.

use easgate::plugin::loaded::sample_notice;
use easgate::plugin::registry::load_builtin;
use easgate::plugin::{PluginEngine, World};

use crate::support::builtin_template;

#[test]
fn device_values_are_escaped_in_html_and_kept_in_text() {
    let mut notice = sample_notice();
    notice.device.eas.device_model = "<b>Evil</b> & \"co\"".into();
    let message = builtin_template("{}").render(&notice).unwrap();
    assert!(
        message
            .html
            .contains("&lt;b&gt;Evil&lt;/b&gt; &amp; &quot;co&quot;"),
        "{}",
        message.html
    );
    assert!(!message.html.contains("<b>Evil"), "{}", message.html);
    assert!(
        message.text.contains("<b>Evil</b> & \"co\""),
        "{}",
        message.text
    );
    assert!(
        message.html.contains(&notice.remediation_url)
            && message.text.contains(&notice.remediation_url)
    );
    assert!(!message.subject.contains('\n'));
}

#[test]
fn admins_edit_the_text_through_settings() {
    let settings = r#"{"subject": "{{organization}}: {{device_model}} is {{verdict}}",
                      "locales": {"de": {"subject": "{{organization}}: {{device_model}} ist gesperrt"}}}"#;
    let template = builtin_template(settings);
    let mut notice = sample_notice();
    assert_eq!(
        template.render(&notice).unwrap().subject,
        "Contoso: iPhone15,2 is quarantined"
    );
    notice.locale = "de-AT".into();
    assert_eq!(
        template.render(&notice).unwrap().subject,
        "Contoso: iPhone15,2 ist gesperrt"
    );
}

#[test]
fn a_template_with_an_unknown_placeholder_is_rejected_at_load() {
    let engine = PluginEngine::new().unwrap();
    let err = load_builtin(
        &engine,
        World::NoticeTemplate,
        r#"{"text": "Hello {{usr}}"}"#,
    )
    .err()
    .unwrap();
    let message = err.to_string();
    assert!(
        message.contains("configure rejected") && message.contains("usr"),
        "{message}"
    );
}

/// Regression: an administrator's wipe or removal was announced with the compliance text
/// (the Company Portal steps). Through the real component: each action's own words, what to
/// do (the help desk, adding the account again) and the reason code, in English, German, French and Spanish.
#[test]
fn device_actions_are_announced_with_their_own_text_in_every_language() {
    let template = builtin_template("{}");
    let cases = [
        (
            "admin-wipe",
            "en-US",
            "remote wipe",
            "add your Contoso work account",
        ),
        (
            "admin-account-wipe",
            "en",
            "the rest of the device is untouched",
            "help desk",
        ),
        (
            "admin-remove",
            "en-GB",
            "removed its mail partnership",
            "add your Contoso work account",
        ),
        (
            "admin-wipe",
            "de-DE",
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
            "de-AT",
            "Mailpartnerschaft entfernt",
            "erneut hinzu",
        ),
        (
            "admin-wipe",
            "fr-FR",
            "effacement à distance",
            "support informatique",
        ),
        (
            "admin-remove",
            "fr-CA",
            "partenariat de messagerie",
            "ajoutez-y de nouveau votre compte professionnel Contoso",
        ),
        (
            "admin-account-wipe",
            "es-ES",
            "se borre del dispositivo",
            "servicio de asistencia",
        ),
        (
            "admin-wipe",
            "es-MX",
            "borrado remoto",
            "vuelva a agregar en él su cuenta profesional de Contoso",
        ),
    ];
    for (reason, locale, what, todo) in cases {
        let mut notice = sample_notice();
        notice.decision.verdict = easgate::plugin::types::Verdict::Block;
        notice.decision.reason = reason.into();
        notice.locale = locale.into();
        let message = template.render(&notice).unwrap();
        for body in [&message.text, &message.html] {
            assert!(body.contains(what), "{reason} {locale}: {body}");
            assert!(body.contains(todo), "{reason} {locale}: {body}");
            assert!(
                body.contains(reason),
                "{reason} {locale}: no reason code in {body}"
            );
            for compliance in [
                "Company Portal",
                "Unternehmensportal",
                "Portail d'entreprise",
                "Portal de empresa",
                "compliant",
                "konform",
            ] {
                assert!(!body.contains(compliance), "{reason} {locale}: {body}");
            }
        }
        let subject = match &locale[..2] {
            "de" => "ein Administrator hat Ihr Gerät bearbeitet",
            "fr" => "un administrateur est intervenu sur votre appareil",
            "es" => "un administrador ha actuado sobre su dispositivo",
            _ => "an administrator acted on your device",
        };
        assert!(message.subject.ends_with(subject), "{}", message.subject);
    }
    // A verdict's notice keeps the compliance steps.
    let message = template.render(&sample_notice()).unwrap();
    assert!(message.text.contains("Company Portal"), "{}", message.text);
}
