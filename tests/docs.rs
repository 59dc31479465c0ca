//! docs/configuration.md lists every key the config accepts, with its default: the keys are
//! read from the config itself (the unknown-key error of each section lists what it expects), so
//! a key added to a section without a row in its table fails here.

use refract::Settings;

const SERVICE: &str = "[routes.\"/q\".services.s]\ntype = \"redis\"\nrequest_channel = \"c\"\n";

/// The keys a section accepts, from its unknown-key error.
fn keys_of(toml: &str) -> Vec<String> {
    let e = Settings::from_toml(toml).unwrap_err().to_string();
    let listed = e
        .split_once("expected one of ")
        .map(|(_, l)| l)
        .or_else(|| e.split_once("expected ").map(|(_, l)| l))
        .unwrap_or_else(|| panic!("no key list in: {e}"));
    listed
        .split(", ")
        .map(|k| k.trim_matches('`').to_string())
        .collect()
}

/// The text of the section whose heading is `heading`, up to the next `## `.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("configuration.md has no {heading}"));
    let body = &doc[start + heading.len() + 2..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

/// Every key has a row of its own (its name in the first cell) in the section's table, and, where
/// the table has a default column, a default that is not blank.
fn assert_rows(doc: &str, heading: &str, keys: &[String]) {
    let text = section(doc, heading);
    let mut header: Vec<&str> = Vec::new();
    let mut rows: Vec<(Vec<&str>, Vec<&str>)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.iter().all(|c| c.chars().all(|ch| ch == '-')) {
            continue;
        }
        if cells.first() == Some(&"key") {
            header = cells;
            continue;
        }
        rows.push((header.clone(), cells));
    }
    for key in keys {
        let name = format!("`{key}`");
        let (header, row) = rows
            .iter()
            .find(|(_, cells)| cells[0].contains(&name))
            .unwrap_or_else(|| panic!("{heading}: no row for {name}"));
        if header.get(1) == Some(&"default") {
            assert!(!row[1].is_empty(), "{heading}: {name} has no default");
        }
        assert!(
            row.last().is_some_and(|m| !m.is_empty()),
            "{heading}: {name} has no meaning"
        );
    }
}

/// Keys described in the text of a section rather than in rows of their own (sub-tables).
fn assert_mentioned(doc: &str, heading: &str, keys: &[String]) {
    let text = section(doc, heading);
    for key in keys {
        assert!(
            text.contains(&format!("`{key}`")),
            "{heading}: {key} is not mentioned"
        );
    }
}

#[test]
fn configuration_md_has_every_key_with_its_default() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let top = keys_of("zzz = 1\n");
    assert!(top.contains(&"node_id".to_string()), "{top:?}");
    assert_rows(&doc, "## Top level", &["node_id".to_string()]);
    for (heading, toml) in [
        ("## `[server]`", "[server]\nzzz = 1\n".to_string()),
        ("## `[redis]`", "[redis]\nzzz = 1\n".to_string()),
        ("## `[admin]`", "[admin]\nzzz = 1\n".to_string()),
        ("## `[channels]`", "[channels]\nzzz = 1\n".to_string()),
        (
            "## `[channels.presence]`",
            "[channels.presence]\nzzz = 1\n".to_string(),
        ),
        (
            "## `[channels.token_endpoint]`",
            "[channels.token_endpoint]\nzzz = 1\n".to_string(),
        ),
        (
            "## `[channels.system]`",
            "[channels.system]\nzzz = 1\n".to_string(),
        ),
        (
            "## `[routes.\"<path>\"]`",
            format!("[routes.\"/q\"]\nzzz = 1\n{SERVICE}"),
        ),
        (
            "## `[routes.\"<path>\".auth]`",
            format!("[routes.\"/q\".auth]\nzzz = 1\n{SERVICE}"),
        ),
        (
            "## `[routes.\"<path>\".services.<name>]`",
            "[routes.\"/q\".services.s]\nzzz = 1\n".to_string(),
        ),
    ] {
        let mut keys = keys_of(&toml);
        // Sub-tables with sections of their own.
        keys.retain(|k| !["services", "auth"].contains(&k.as_str()));
        assert!(!keys.is_empty(), "{heading}");
        assert_rows(&doc, heading, &keys);
    }
    // Inline tables, described in their key's row.
    let route = "## `[routes.\"<path>\"]`";
    let rate = keys_of(&format!(
        "[routes.\"/q\"]\nrate_limit = {{ zzz = 1 }}\n{SERVICE}"
    ));
    assert_mentioned(&doc, route, &rate);
    let auth = "## `[routes.\"<path>\".auth]`";
    let jwt = keys_of(&format!(
        "[routes.\"/q\".auth]\njwt = {{ zzz = 1 }}\n{SERVICE}"
    ));
    assert_mentioned(&doc, auth, &jwt);
    let hook = keys_of(&format!(
        "[routes.\"/q\".auth]\nconnect_hook = {{ zzz = 1 }}\n{SERVICE}"
    ));
    assert_mentioned(&doc, auth, &hook);
}
