//! `{{name}}` templates: compiled once in `configure`, rendered per notice.
//!
//! There is no logic on purpose (no conditionals, loops or filters): a notice template is
//! edited by operators, and a template that compiles renders every notice.

use crate::easgate::policy::types::{Notice, Verdict};

/// A compiled template: literal text and the variables between it.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Var(Var),
}

/// How substituted values are written; literal template text is never altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// The subject must stay one line, whatever a device record contains.
    Subject,
    /// Device records come from users' phones: every value is escaped for HTML text and
    /// attributes alike.
    Html,
    Text,
}

/// The language of the words the plugin itself puts into a message (`{{verdict}}`,
/// `{{reason_text}}`): the language of the template they are rendered into, so that an English
/// template never shows a German verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    English,
    German,
    French,
    Spanish,
}

impl Language {
    /// The language of a BCP 47 tag (any case, `_` or `-`) if the plugin speaks it, else
    /// English. Only the primary subtag counts: every region and script of a language
    /// (`de-AT`, `fr-CA`, `es-419`) reads the same texts.
    pub fn of(tag: &str) -> Self {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or_default();
        match primary.to_ascii_lowercase().as_str() {
            "de" => Language::German,
            "fr" => Language::French,
            "es" => Language::Spanish,
            _ => Language::English,
        }
    }
}

/// The variables a template may use, by the name it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Organization,
    User,
    Mailbox,
    DeviceId,
    DeviceType,
    DeviceModel,
    DeviceOs,
    DeviceName,
    Verdict,
    Reason,
    ReasonText,
    RemediationUrl,
}

const VARS: [(&str, Var); 12] = [
    ("organization", Var::Organization),
    ("user", Var::User),
    ("mailbox", Var::Mailbox),
    ("device_id", Var::DeviceId),
    ("device_type", Var::DeviceType),
    ("device_model", Var::DeviceModel),
    ("device_os", Var::DeviceOs),
    ("device_name", Var::DeviceName),
    ("verdict", Var::Verdict),
    ("reason", Var::Reason),
    ("reason_text", Var::ReasonText),
    ("remediation_url", Var::RemediationUrl),
];

impl Template {
    /// Compiles `source`; `name` (e.g. `locales.de-DE.html`) is what errors call it.
    /// Whitespace inside the braces is allowed: `{{ user }}` is `{{user}}`.
    pub fn compile(source: &str, name: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                segments.push(Segment::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                let consumed = source.len() - rest.len() + open;
                let line = source[..consumed].matches('\n').count() + 1;
                return Err(format!("{name}: unclosed {{{{ on line {line}"));
            };
            let var_name = after[..close].trim();
            let Some(&(_, var)) = VARS.iter().find(|(known, _)| *known == var_name) else {
                let known: Vec<&str> = VARS.iter().map(|(known, _)| *known).collect();
                return Err(format!(
                    "{name}: unknown placeholder {{{{{var_name}}}}}; the placeholders are {}",
                    known.join(", ")
                ));
            };
            segments.push(Segment::Var(var));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Self { segments })
    }

    pub fn render(&self, notice: &Notice, escape: Escape, language: Language) -> String {
        let mut out = String::with_capacity(self.len_hint());
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Var(var) => write_value(&mut out, var.value(notice, language), escape),
            }
        }
        out
    }

    fn len_hint(&self) -> usize {
        const VALUE_HINT: usize = 24;
        self.segments
            .iter()
            .map(|segment| match segment {
                Segment::Text(text) => text.len(),
                Segment::Var(_) => VALUE_HINT,
            })
            .sum()
    }
}

fn write_value(out: &mut String, value: &str, escape: Escape) {
    match escape {
        Escape::Text => out.push_str(value),
        Escape::Subject => out.extend(value.chars().map(|c| match c {
            '\r' | '\n' => ' ',
            c => c,
        })),
        Escape::Html => {
            for c in value.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '"' => out.push_str("&quot;"),
                    '\'' => out.push_str("&#39;"),
                    c => out.push(c),
                }
            }
        }
    }
}

impl Var {
    fn value(self, notice: &Notice, language: Language) -> &str {
        let device = &notice.device;
        let eas = &device.eas;
        match self {
            Var::Organization => &notice.organization,
            Var::User => device
                .user
                .as_ref()
                .map(|user| user.user_principal_name.as_str())
                .into_iter()
                .chain([eas.mailbox.as_str()])
                .find(|name| !name.is_empty())
                .unwrap_or("there"),
            Var::Mailbox => &eas.mailbox,
            Var::DeviceId => &eas.device_id,
            Var::DeviceType => &eas.device_type,
            Var::DeviceModel => &eas.device_model,
            Var::DeviceOs => &eas.device_os,
            // The name the user gave the device, when device management knows it; else the
            // most recognizable thing Exchange knows.
            Var::DeviceName => device
                .managed
                .as_ref()
                .map(|managed| managed.device_name.as_str())
                .into_iter()
                .chain([
                    eas.device_model.as_str(),
                    eas.device_type.as_str(),
                    eas.device_id.as_str(),
                ])
                .find(|name| !name.is_empty())
                .unwrap_or_default(),
            Var::Verdict => verdict_word(notice.decision.verdict, language),
            Var::Reason => &notice.decision.reason,
            Var::ReasonText => reason_text(&notice.decision.reason, language),
            Var::RemediationUrl => &notice.remediation_url,
        }
    }
}

/// Completes "… was {{verdict}}" ("… wurde {{verdict}}").
fn verdict_word(verdict: Verdict, language: Language) -> &'static str {
    match (language, verdict) {
        (Language::English, Verdict::Allow) => "allowed",
        (Language::English, Verdict::Block) => "blocked",
        (Language::English, Verdict::Quarantine) => "quarantined",
        (Language::English, Verdict::Exempt) => "exempt",
        (Language::German, Verdict::Allow) => "zugelassen",
        (Language::German, Verdict::Block) => "gesperrt",
        (Language::German, Verdict::Quarantine) => "unter Quarantäne gestellt",
        (Language::German, Verdict::Exempt) => "von der Richtlinie ausgenommen",
        // "L'accès … a été {{verdict}}": agrees with the masculine "accès".
        (Language::French, Verdict::Allow) => "autorisé",
        (Language::French, Verdict::Block) => "bloqué",
        (Language::French, Verdict::Quarantine) => "mis en quarantaine",
        (Language::French, Verdict::Exempt) => "exempté de la stratégie d'accès",
        // "El acceso … se ha {{verdict}}".
        (Language::Spanish, Verdict::Allow) => "permitido",
        (Language::Spanish, Verdict::Block) => "bloqueado",
        (Language::Spanish, Verdict::Quarantine) => "puesto en cuarentena",
        (Language::Spanish, Verdict::Exempt) => "eximido de la directiva de acceso",
    }
}

/// Completes "… because {{reason_text}}." ("…, weil {{reason_text}}.") for the reason codes
/// of the built-in and example policies and of administrators' device actions; any other
/// policy's codes get a generic sentence.
fn reason_text(reason: &str, language: Language) -> &'static str {
    match language {
        Language::English => match reason {
            "noncompliant" => "it does not meet your organization's compliance requirements",
            "not-enrolled" => "it is not enrolled in device management",
            "device-rule" => "your organization's rules do not allow this type of device",
            "os-too-old" => "its operating system is older than your organization allows",
            "stale" => "it has not synchronized with the mail server for too long",
            // An administrator's device action (the host's codes, with the verdict `block`).
            "admin-wipe" => {
                "an administrator asked for a remote wipe: the whole device is reset to factory settings, and everything on it erased, the next time it connects"
            }
            "admin-account-wipe" => {
                "an administrator asked for your work email account and its data to be removed from it the next time it connects; the rest of the device is untouched"
            }
            "admin-remove" => {
                "an administrator removed its mail partnership, so it no longer receives your work email"
            }
            _ => "it does not meet your organization's requirements for email access",
        },
        Language::German => match reason {
            "noncompliant" => "es die Konformitätsanforderungen Ihrer Organisation nicht erfüllt",
            "not-enrolled" => "es nicht in der Geräteverwaltung registriert ist",
            "device-rule" => "die Regeln Ihrer Organisation diesen Gerätetyp nicht zulassen",
            "os-too-old" => "sein Betriebssystem älter ist, als Ihre Organisation erlaubt",
            "stale" => "es sich zu lange nicht mit dem Mailserver synchronisiert hat",
            "admin-wipe" => {
                "ein Administrator eine Fernlöschung angefordert hat: das ganze Gerät wird bei der nächsten Verbindung auf die Werkseinstellungen zurückgesetzt und alles darauf gelöscht"
            }
            "admin-account-wipe" => {
                "ein Administrator angefordert hat, Ihr geschäftliches E-Mail-Konto und seine Daten bei der nächsten Verbindung von dem Gerät zu entfernen; der Rest des Geräts bleibt unberührt"
            }
            "admin-remove" => {
                "ein Administrator seine Mailpartnerschaft entfernt hat und es Ihre geschäftlichen E-Mails nicht mehr erhält"
            }
            _ => "es die Anforderungen Ihrer Organisation für den E-Mail-Zugriff nicht erfüllt",
        },
        // "…, car {{reason_text}}.": the device is named, as "il" would read as "l'accès".
        Language::French => match reason {
            "noncompliant" => {
                "l'appareil ne respecte pas les exigences de conformité de votre organisation"
            }
            "not-enrolled" => "l'appareil n'est pas inscrit dans la gestion des appareils",
            "device-rule" => "les règles de votre organisation n'autorisent pas ce type d'appareil",
            "os-too-old" => {
                "le système d'exploitation de l'appareil est plus ancien que ce que votre organisation autorise"
            }
            "stale" => {
                "l'appareil ne s'est pas synchronisé avec le serveur de messagerie depuis trop longtemps"
            }
            "admin-wipe" => {
                "un administrateur a demandé un effacement à distance : l'appareil sera réinitialisé aux paramètres d'usine lors de sa prochaine connexion"
            }
            "admin-account-wipe" => {
                "un administrateur a demandé que votre compte de messagerie professionnel soit supprimé de l'appareil lors de sa prochaine connexion"
            }
            "admin-remove" => {
                "un administrateur a supprimé le partenariat de messagerie de l'appareil : configurez de nouveau votre compte professionnel sur l'appareil si vous l'utilisez encore"
            }
            _ => {
                "l'appareil ne respecte pas les exigences de votre organisation pour l'accès à la messagerie"
            }
        },
        // "… porque {{reason_text}}."
        Language::Spanish => match reason {
            "noncompliant" => {
                "el dispositivo no cumple las directivas de cumplimiento de su organización"
            }
            "not-enrolled" => {
                "el dispositivo no está inscrito en la administración de dispositivos"
            }
            "device-rule" => "las reglas de su organización no permiten este tipo de dispositivo",
            "os-too-old" => {
                "el sistema operativo del dispositivo es más antiguo de lo que permite su organización"
            }
            "stale" => {
                "el dispositivo lleva demasiado tiempo sin sincronizarse con el servidor de correo"
            }
            "admin-wipe" => {
                "un administrador ha solicitado un borrado remoto: el dispositivo se restablecerá a la configuración de fábrica la próxima vez que se conecte"
            }
            "admin-account-wipe" => {
                "un administrador ha solicitado que su cuenta de correo profesional se borre del dispositivo la próxima vez que se conecte"
            }
            "admin-remove" => {
                "un administrador ha quitado la asociación de correo del dispositivo: vuelva a configurar su cuenta profesional en él si todavía lo usa"
            }
            _ => {
                "el dispositivo no cumple los requisitos de su organización para acceder al correo"
            }
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::easgate::policy::types::{
        AccessState, Decision, DeviceContext, EasDevice, ManagedDevice, Ownership, User,
    };

    /// A quarantined, unenrolled iPhone whose model a user could set to anything.
    pub(crate) fn notice() -> Notice {
        Notice {
            organization: "Contoso".into(),
            device: DeviceContext {
                eas: EasDevice {
                    device_id: "ABC123".into(),
                    identity: String::new(),
                    mailbox: "alice@contoso.com".into(),
                    device_type: "iPhone".into(),
                    device_model: "iPhone15,2 <b>\"x\" & 'y'".into(),
                    device_os: "iOS 17.4".into(),
                    user_agent: String::new(),
                    first_sync: None,
                    last_success_sync: None,
                    access_state: AccessState::Quarantined,
                    access_state_reason: "Global".into(),
                },
                managed: None,
                user: Some(User {
                    user_principal_name: "alice@contoso.com".into(),
                    primary_smtp: "alice@contoso.com".into(),
                    groups: Vec::new(),
                }),
            },
            decision: Decision {
                verdict: Verdict::Quarantine,
                reason: "not-enrolled".into(),
                notify: true,
            },
            remediation_url: "https://portal.example/enroll?a=1&b=2".into(),
            locale: "en-US".into(),
        }
    }

    fn render(source: &str, notice: &Notice, escape: Escape) -> String {
        Template::compile(source, "t")
            .unwrap()
            .render(notice, escape, Language::English)
    }

    #[test]
    fn the_plugins_own_words_follow_the_templates_language() {
        let template = Template::compile("{{verdict}}: {{reason_text}}", "t").unwrap();
        assert_eq!(
            template.render(&notice(), Escape::Text, Language::German),
            "unter Quarantäne gestellt: es nicht in der Geräteverwaltung registriert ist"
        );
        assert_eq!(
            template.render(&notice(), Escape::Text, Language::French),
            "mis en quarantaine: l'appareil n'est pas inscrit dans la gestion des appareils"
        );
        assert_eq!(
            template.render(&notice(), Escape::Text, Language::Spanish),
            "puesto en cuarentena: el dispositivo no está inscrito en la administración de \
             dispositivos"
        );
        for (tag, want) in [
            ("de-DE", Language::German),
            ("DE_at", Language::German),
            ("de", Language::German),
            ("fr-FR", Language::French),
            ("fr-CA", Language::French),
            ("FR", Language::French),
            ("es-ES", Language::Spanish),
            ("es_MX", Language::Spanish),
            ("es-419", Language::Spanish),
            ("it-IT", Language::English),
            ("pt-BR", Language::English),
            ("en-GB", Language::English),
            ("", Language::English),
            ("dev", Language::English),
            ("fra", Language::English),
        ] {
            assert_eq!(Language::of(tag), want, "{tag}");
        }
    }

    #[test]
    fn substitutes_every_variable() {
        let all: Vec<String> = VARS
            .iter()
            .map(|(name, _)| format!("{name}={{{{{name}}}}}"))
            .collect();
        let rendered = render(&all.join("|"), &notice(), Escape::Text);
        assert_eq!(
            rendered,
            "organization=Contoso|user=alice@contoso.com|mailbox=alice@contoso.com|\
             device_id=ABC123|device_type=iPhone|device_model=iPhone15,2 <b>\"x\" & 'y'|\
             device_os=iOS 17.4|device_name=iPhone15,2 <b>\"x\" & 'y'|verdict=quarantined|\
             reason=not-enrolled|reason_text=it is not enrolled in device management|\
             remediation_url=https://portal.example/enroll?a=1&b=2"
        );
    }

    #[test]
    fn html_escapes_values_but_not_the_template() {
        let rendered = render("<i>{{ device_model }}</i>", &notice(), Escape::Html);
        assert_eq!(
            rendered,
            "<i>iPhone15,2 &lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;</i>"
        );
    }

    #[test]
    fn subject_values_stay_on_one_line() {
        let mut notice = notice();
        notice.device.eas.device_model = "evil\r\nBcc: x@example.com".into();
        let rendered = render("[{{device_model}}]", &notice, Escape::Subject);
        assert_eq!(rendered, "[evil  Bcc: x@example.com]");
    }

    #[test]
    fn fallbacks_for_user_and_device_name() {
        let mut notice = notice();
        notice.device.user = None;
        notice.device.managed = Some(ManagedDevice {
            id: "m1".into(),
            user_principal_name: String::new(),
            device_name: "Alice's phone".into(),
            operating_system: "iOS".into(),
            os_version: "17.4".into(),
            compliance_state: crate::easgate::policy::types::ComplianceState::Noncompliant,
            management_state: "managed".into(),
            ownership: Ownership::Personal,
            last_sync: None,
            enrolled: None,
        });
        assert_eq!(
            render("{{user}}/{{device_name}}", &notice, Escape::Text),
            "alice@contoso.com/Alice's phone"
        );
        notice.device.eas.mailbox.clear();
        notice.device.managed = None;
        notice.device.eas.device_model.clear();
        assert_eq!(
            render("{{user}}/{{device_name}}", &notice, Escape::Text),
            "there/iPhone"
        );
    }

    #[test]
    fn compile_errors_name_template_and_placeholder() {
        let err = Template::compile("Hi {{user}}, {{ usr }}", "locales.de.text").unwrap_err();
        assert!(
            err.starts_with(
                "locales.de.text: unknown placeholder {{usr}}; the placeholders are organization,"
            ),
            "{err}"
        );
        let err = Template::compile("a\nb {{user}} {{user", "html").unwrap_err();
        assert_eq!(err, "html: unclosed {{ on line 2");
        // A lone closing brace pair is just text.
        assert_eq!(render("a }} b", &notice(), Escape::Text), "a }} b");
    }
}
