//! `bulwark check` on the real binary: good configs pass, bad ones name file and field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const GOOD: &str = r#"
listen: 127.0.0.1:8080
providers:
  - name: anthropic
    kind: anthropic
    api_key: ${ANTHROPIC_API_KEY}
  - name: openai
    kind: openai
    api_key: ${OPENAI_API_KEY}
  - name: google
    kind: gemini
    api_key: ${GOOGLE_API_KEY}
  - name: local
    kind: openai-compatible
    base_url: http://127.0.0.1:11434/v1
routes:
  - model: chat
    targets:
      - {provider: anthropic, model: claude-sonnet-4-5}
      - {provider: openai, model: gpt-4.1}
      - {provider: google, model: gemini-2.5-pro}
"#;

/// Runs `bulwark check` on `text`; returns (exit code, stdout + stderr, file path).
fn check(text: &str) -> (i32, String, String) {
    check_with_env(text, &[])
}

/// [`check`] with extra environment variables.
fn check_with_env(text: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bulwark.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["check", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .env("ANTHROPIC_API_KEY", "sk-ant-secret-value")
        .env("OPENAI_API_KEY", "sk-openai-secret-value")
        .env("GOOGLE_API_KEY", "google-secret-value")
        .env_remove("BULWARK_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        text,
        path.display().to_string(),
    )
}

#[test]
fn the_readme_config_passes() {
    let (code, out, path) = check(GOOD);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&path) && out.contains("ok"), "{out}");
    assert!(!out.contains("secret-value"), "a key leaked: {out}");
}

/// A worker-thread setting Bulwark cannot use is refused with the variable and the fix,
/// not silently replaced by the default.
#[test]
fn a_bad_worker_thread_setting_is_refused_naming_the_variable() {
    for bad in ["abc", "0", "-2", ""] {
        let (code, text, _) = check_with_env(GOOD, &[("TOKIO_WORKER_THREADS", bad)]);
        assert_ne!(code, 0, "{bad:?} was accepted: {text}");
        assert!(
            text.contains("TOKIO_WORKER_THREADS") && text.contains("1 or more"),
            "{bad:?}: {text}"
        );
    }
}

#[test]
fn bad_configs_are_rejected_naming_file_and_field() {
    let cases: &[(&str, String, &str, &str)] = &[
        (
            "unknown field",
            GOOD.replace("    kind: gemini\n", "    kind: gemini\n    region: eu\n"),
            "providers[2].region",
            "unknown field `region`",
        ),
        (
            "route naming a provider that does not exist",
            GOOD.replace("{provider: google,", "{provider: gogle,"),
            "routes[0].targets[2].provider",
            "no provider is named \"gogle\"",
        ),
        (
            "unset environment variable",
            GOOD.replace("${OPENAI_API_KEY}", "${BULWARK_TEST_UNSET_VAR}"),
            "providers[1].api_key",
            "BULWARK_TEST_UNSET_VAR is not set",
        ),
        (
            "malformed URL",
            GOOD.replace("http://127.0.0.1:11434/v1", "http//127.0.0.1:11434/v1"),
            "providers[3].base_url",
            "not a valid URL",
        ),
        (
            "duplicate provider names",
            GOOD.replace("name: local", "name: openai"),
            "providers[3].name",
            "duplicate provider name",
        ),
        (
            "duplicate routes",
            format!(
                "{GOOD}  - model: chat\n    targets:\n      - {{provider: openai, model: gpt-4.1}}\n"
            ),
            "routes[1].model",
            "duplicate route",
        ),
        (
            "wrong type",
            GOOD.replace("listen: 127.0.0.1:8080", "listen: [1, 2]"),
            "listen",
            "invalid type",
        ),
        (
            "not YAML",
            "providers: [\n  {name: x".to_string(),
            "",
            "not valid YAML",
        ),
    ];
    for (what, text, field, message) in cases {
        let (code, out, path) = check(text);
        assert_ne!(code, 0, "{what}: accepted\n{out}");
        assert!(out.contains(&path), "{what}: file not named: {out}");
        assert!(
            out.contains(&format!("{path}: {field}")),
            "{what}: field `{field}` not named: {out}"
        );
        assert!(
            out.contains(message),
            "{what}: expected {message:?} in {out}"
        );
        assert!(!out.contains("secret-value"), "{what}: a key leaked: {out}");
    }
}
