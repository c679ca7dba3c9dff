//! When an organization's syncs run: the quick and full intervals, or a daily full sync.

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::Organization;

/// Reads `"HH:MM"` (UTC) as seconds after midnight.
pub(super) fn time_of_day<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let text = String::deserialize(d)?;
    let parsed = text.split_once(':').and_then(|(h, m)| {
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && text.len() == 5).then_some(h * 3600 + m * 60)
    });
    parsed.map(Some).ok_or_else(|| {
        de::Error::custom(format!(r#"`{text}` is not a UTC time of day like "02:30""#))
    })
}

impl Organization {
    /// Intervals above zero. `at` names the organization's fields.
    pub(super) fn validate_schedule(
        &self,
        at: impl Fn(&str) -> String,
    ) -> Result<(), (String, String)> {
        for (field, d) in [
            ("quick_interval", self.quick_interval),
            ("full_interval", self.full_interval),
        ] {
            if d.is_zero() {
                return Err((at(field), "must be longer than 0".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{FULL, parse, place};
    use crate::config::{SecretSource, defaults};
    use std::time::Duration;

    #[test]
    fn schedule_and_admin_defaults_and_settings() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.admin, None);
        assert_eq!(c.organizations[0].quick_interval, defaults::QUICK_INTERVAL);
        assert_eq!(c.organizations[0].full_interval, defaults::FULL_INTERVAL);
        let text = FULL.replacen(
            "name = \"fabrikam\"\n",
            "name = \"fabrikam\"\nquick_interval = \"2m\"\nfull_interval = \"6h\"\n",
            1,
        ) + "\n[admin]\ntoken = { file = \"admin.token\" }\n";
        let c = parse(&text).unwrap();
        assert_eq!(c.organizations[1].full_at, None);
        let daily = parse(&FULL.replacen(
            "name = \"fabrikam\"\n",
            "name = \"fabrikam\"\nfull_at = \"02:30\"\n",
            1,
        ))
        .unwrap();
        assert_eq!(daily.organizations[1].full_at, Some(2 * 3600 + 30 * 60));
        assert_eq!(c.organizations[1].quick_interval, Duration::from_secs(120));
        assert_eq!(
            c.organizations[1].full_interval,
            Duration::from_secs(6 * 3600)
        );
        let admin = c.admin.unwrap();
        assert_eq!(admin.listen, "127.0.0.1:8470".parse().unwrap());
        assert!(admin.listen.ip().is_loopback());
        assert_eq!(
            admin.token,
            SecretSource::File("/etc/easgate/admin.token".into())
        );
        let listen =
            parse(&(FULL.to_owned() + "\n[admin]\nlisten = \"[::1]:9000\"\ntoken = \"t\"\n"));
        assert_eq!(
            listen.unwrap().admin.unwrap().listen,
            "[::1]:9000".parse().unwrap()
        );
    }

    #[test]
    fn bad_schedule_and_admin_settings_name_the_field() {
        let zero = FULL.replacen(
            "name = \"fabrikam\"\n",
            "name = \"fabrikam\"\nquick_interval = \"0s\"\n",
            1,
        );
        let (line, _, field, message) = place(parse(&zero).unwrap_err());
        assert_eq!(field, "organization[1].quick_interval");
        assert_eq!(
            zero.lines().nth(line - 1).unwrap(),
            "quick_interval = \"0s\""
        );
        assert!(message.contains("longer than 0"), "{message}");

        for bad in ["24:00", "2:30", "02:60", "noon"] {
            let text = FULL.replacen(
                "name = \"fabrikam\"\n",
                &format!("name = \"fabrikam\"\nfull_at = \"{bad}\"\n"),
                1,
            );
            let (_, _, field, message) = place(parse(&text).unwrap_err());
            assert_eq!(field, "organization[1].full_at", "{bad}");
            assert!(message.contains("time of day"), "{message}");
        }

        let no_token = FULL.to_owned() + "\n[admin]\nlisten = \"127.0.0.1:1\"\n";
        let (_, _, field, message) = place(parse(&no_token).unwrap_err());
        assert_eq!(field, "admin.token", "{message}");

        let bad_listen = FULL.to_owned() + "\n[admin]\nlisten = \"localhost\"\ntoken = \"t\"\n";
        let (_, _, field, _) = place(parse(&bad_listen).unwrap_err());
        assert_eq!(field, "admin.listen");

        let missing =
            FULL.to_owned() + "\n[admin]\ntoken = { env = \"EASGATE_TEST_SURELY_UNSET_4712\" }\n";
        let err = parse(&missing).unwrap().check_secrets().unwrap_err();
        assert!(err.to_string().starts_with("admin.token: "), "{err}");
    }
}
