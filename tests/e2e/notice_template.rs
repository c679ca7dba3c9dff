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
