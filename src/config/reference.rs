//! The keys, derived from the settings structs: their names, defaults,
//! examples and descriptions (the structs' doc comments, through their
//! JSON schema). The packaged `dist/upcache.toml` is written from here, and
//! tests hold it and `docs/configuration.md` to it.

use schemars::Schema;
use serde_json::Value;

use crate::admin::AdminSettings;
use crate::delivery::DeliverySettings;
use crate::fetch::FetchSettings;
use crate::fleet::FleetSettings;
use crate::http::ContentSettings;
use crate::net::NetSettings;
use crate::node::follow::FollowSettings;
use crate::store::s3::SharedTierSettings;
use crate::store::StoreSettings;
use crate::telemetry::access_log::AccessLogSettings;
use crate::upkeep::UpkeepSettings;
use crate::wsus::client::ClientSettings;
use crate::wsus::sync::SyncSettings;

/// One key of the configuration.
#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    /// What it does (the field's doc comment).
    pub description: String,
    /// The built-in default, as TOML; `None`: unset.
    pub default: Option<String>,
    /// A value to show for a key unset by default, as TOML.
    pub example: Option<String>,
}

/// The keys of one module's settings.
#[derive(Debug, Clone)]
pub struct Section {
    /// What the settings are of (the struct's doc comment).
    pub title: String,
    pub keys: Vec<Key>,
}

/// Every section, in the order `dist/upcache.toml` lists them.
pub fn sections() -> Vec<Section> {
    vec![
        section(schemars::schema_for!(StoreSettings)),
        section(schemars::schema_for!(ContentSettings)),
        section(schemars::schema_for!(AdminSettings)),
        section(schemars::schema_for!(NetSettings)),
        section(schemars::schema_for!(FetchSettings)),
        section(schemars::schema_for!(SharedTierSettings)),
        section(schemars::schema_for!(FollowSettings)),
        section(schemars::schema_for!(AccessLogSettings)),
        section(schemars::schema_for!(UpkeepSettings)),
        section(schemars::schema_for!(DeliverySettings)),
        section(schemars::schema_for!(SyncSettings)),
        section(schemars::schema_for!(ClientSettings)),
        section(schemars::schema_for!(FleetSettings)),
    ]
}

/// Every key's name.
pub fn known_keys() -> Vec<&'static str> {
    static KEYS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        sections()
            .into_iter()
            .flat_map(|s| s.keys.into_iter().map(|k| k.name))
            .collect()
    })
    .iter()
    .map(String::as_str)
    .collect()
}

fn section(schema: Schema) -> Section {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").trim().to_owned();
    let keys = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(name, prop)| Key {
                    name: name.clone(),
                    description: text(prop.get("description")),
                    default: prop.get("default").and_then(toml_value),
                    example: prop
                        .get("examples")
                        .and_then(|e| e.get(0))
                        .and_then(toml_value),
                })
                .collect()
        })
        .unwrap_or_default();
    Section {
        title: text(schema.get("description")),
        keys,
    }
}

/// A JSON value as TOML writes it; `None` for null (unset).
fn toml_value(v: &Value) -> Option<String> {
    if v.is_null() {
        return None;
    }
    toml::Value::try_from(v).ok().map(|t| t.to_string())
}

/// The package's own values, where they differ from the built-in ones,
/// with why.
const PACKAGED: &[(&str, &str, &str)] = &[
    (
        "data_dir",
        "\"/var/lib/upcache\"",
        "the service keeps it in its StateDirectory",
    ),
    (
        "listen",
        "\"0.0.0.0:8530\"",
        "the service listens on every interface",
    ),
    (
        "access_log",
        "\"/var/log/upcache/access.log\"",
        "the service writes into its LogsDirectory, and /etc/logrotate.d/upcache rotates it",
    ),
];

const HEADER: &str = "\
# /etc/upcache/upcache.toml: settings of the upcache service.
#
# Every key is listed. A commented \"# key = value\" line shows the built-in
# default; uncomment and change it to override. Lines marked \"# example\"
# show a value for a key that is unset by default. Flags and UPCACHE_*
# environment variables override this file (see `man upcache-serve`).
# Apply changes with `systemctl restart upcache` (`systemctl reload`
# reopens the access log and re-reads the TLS certificates).
#
# Written from the settings structs by `cargo test` (UPCACHE_BLESS=1
# rewrites it): change a key's text where the key is defined.
";

/// The packaged `dist/upcache.toml`.
pub fn packaged_toml() -> String {
    let mut out = String::from(HEADER);
    for section in sections() {
        out.push_str(&format!("\n# --- {} ", section.title.trim_end_matches('.')));
        out.push_str(&"-".repeat(72usize.saturating_sub(section.title.len() + 7)));
        out.push('\n');
        for key in &section.keys {
            out.push('\n');
            out.push_str(&comment(&key.description));
            out.push_str(&key_line(key));
        }
    }
    out
}

fn key_line(key: &Key) -> String {
    if let Some((_, value, why)) = PACKAGED.iter().find(|(k, _, _)| *k == key.name) {
        let default = key.default.as_deref().unwrap_or("unset");
        return format!(
            "# Built-in default: {default}; {why}.\n{} = {value}\n",
            key.name
        );
    }
    match (&key.default, &key.example) {
        (Some(default), _) => format!("# {} = {default}\n", key.name),
        (None, Some(example)) => format!("# {} = {example} # example\n", key.name),
        (None, None) => format!("# {} =\n", key.name),
    }
}

/// Text as `#` lines of at most 76 characters.
fn comment(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 76 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    if line.len() > 1 {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ServeArgs};
    use clap::{Args, CommandFactory};

    /// Rewrites `path` with `expected` under `UPCACHE_BLESS=1`; else fails
    /// when they differ.
    fn holds(path: &str, expected: &str) {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        if std::env::var_os("UPCACHE_BLESS").is_some() {
            std::fs::write(&full, expected).unwrap();
            return;
        }
        let actual = std::fs::read_to_string(&full).unwrap();
        assert!(
            actual == expected,
            "{path} is not what the settings structs say; run `UPCACHE_BLESS=1 cargo test --lib reference` and review the diff"
        );
    }

    #[test]
    fn the_packaged_config_is_written_from_the_settings_structs() {
        holds("dist/upcache.toml", &packaged_toml());
    }

    #[test]
    fn every_key_is_documented_and_unset_keys_have_an_example() {
        for key in sections().iter().flat_map(|s| &s.keys) {
            assert!(!key.description.is_empty(), "{}: no doc comment", key.name);
            assert!(
                key.default.is_some() || key.example.is_some(),
                "{}: unset by default and no example",
                key.name
            );
        }
    }

    /// The packaged file loads, its commented values are the built-in
    /// defaults, and its examples are valid values.
    #[test]
    fn the_packaged_config_loads_and_its_comments_are_the_defaults() {
        let text = packaged_toml();
        let dir = tempfile::tempdir().unwrap();
        let load = |toml: &str| {
            let path = dir.path().join("upcache.toml");
            std::fs::write(&path, toml).unwrap();
            Config::load(&ServeArgs {
                config: Some(path),
                ..ServeArgs::default()
            })
        };
        let packaged = load(&text).unwrap();
        assert_eq!(
            packaged.store.data_dir,
            std::path::Path::new("/var/lib/upcache")
        );
        let uncomment = |marker: fn(&str) -> bool| -> String {
            text.lines()
                .filter_map(|l| l.strip_prefix("# "))
                .filter(|l| {
                    l.split_once(" = ")
                        .is_some_and(|(k, _)| known_keys().contains(&k))
                })
                .filter(|l| marker(l))
                .map(|l| format!("{}\n", l.trim_end_matches(" # example")))
                .collect()
        };
        let defaults = uncomment(|l| !l.ends_with("# example"));
        assert_eq!(
            format!("{:?}", load(&defaults).unwrap()),
            format!("{:?}", load("").unwrap())
        );
        let examples = uncomment(|l| l.ends_with("# example"));
        assert!(!examples.is_empty());
        load(&examples).unwrap_or_else(|e| panic!("{e}\n{examples}"));
    }

    /// `docs/configuration.md` has a row for every key and no other, with
    /// the built-in default and the flag a key has.
    #[test]
    fn the_configuration_docs_list_every_key_with_its_default_and_flag() {
        let docs = include_str!("../../docs/configuration.md");
        let flags: Vec<String> = ServeArgs::augment_args(clap::Command::new("serve"))
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| l.replace('-', "_")))
            .collect();
        let (mut seen, mut wrong) = (Vec::new(), Vec::new());
        for row in docs.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split(" | ").map(str::trim).collect();
            let name = cells[0].trim_start_matches("| ").trim_matches('`');
            let key = sections()
                .into_iter()
                .flat_map(|s| s.keys)
                .find(|k| k.name == name)
                .unwrap_or_else(|| panic!("docs/configuration.md lists `{name}`, which is no key"));
            let default = key
                .default
                .as_deref()
                .map_or("unset".to_owned(), |d| format!("`{d}`"));
            if cells[1] != default {
                wrong.push(format!(
                    "`{name}`: default {} should be {default}",
                    cells[1]
                ));
            }
            if (cells[2] != "file only") != flags.contains(&key.name) {
                wrong.push(format!("`{name}`: flag column {}", cells[2]));
            }
            seen.push(key.name);
        }
        assert!(wrong.is_empty(), "docs/configuration.md: {wrong:#?}");
        let missing: Vec<_> = known_keys()
            .into_iter()
            .filter(|k| !seen.iter().any(|s| s == k))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md lacks {missing:?}"
        );
    }

    #[test]
    fn every_flag_of_serve_is_a_key() {
        for arg in crate::cli::Cli::command()
            .find_subcommand("serve")
            .unwrap()
            .get_arguments()
        {
            let Some(long) = arg.get_long() else { continue };
            if long == "config" {
                continue;
            }
            assert!(
                known_keys().contains(&long.replace('-', "_").as_str()),
                "--{long} names no key"
            );
        }
    }
}
