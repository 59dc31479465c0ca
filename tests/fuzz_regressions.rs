//! The fuzz targets (`fuzz/`, run with `cargo fuzz`) in the normal test suite.
//!
//! - **Seeds.** Every committed seed under `fuzz/corpus/<target>/` goes through its target's
//!   harness (`fuzz/harness.rs`, the same code the fuzz binaries run), so a seed that would crash
//!   a target fails here first, without nightly.
//! - **Findings.** Each crash, hang or blow-up a fuzzer found is a named test below, on the exact
//!   bytes, asserting the clear answer the decoder now gives.

use std::path::Path;

#[path = "../fuzz/harness.rs"]
mod harness;

/// What a fuzz target does with one input.
type Harness = fn(&[u8]);

/// Each target, by its directory name under `fuzz/corpus/`.
const TARGETS: [(&str, Harness); 8] = [
    ("resp", harness::resp),
    ("prism_inbound", harness::prism_inbound),
    ("prism_http_body", harness::prism_http_body),
    ("phoenix_text", harness::phoenix_text),
    ("phoenix_binary", harness::phoenix_binary),
    ("token", harness::token),
    ("admission", harness::admission),
    ("config", harness::config),
];

#[test]
fn every_seed_runs_through_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    let mut names: Vec<_> = TARGETS.iter().map(|(name, _)| name.to_string()).collect();
    names.sort();
    assert_eq!(dirs, names, "one seed directory per target");
    for (name, run) in TARGETS {
        let mut seeds = 0;
        for file in std::fs::read_dir(root.join(name)).unwrap() {
            let path = file.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                bytes.len() < 64 * 1024,
                "{} is too big for a seed",
                path.display()
            );
            run(&bytes);
            seeds += 1;
        }
        assert!(seeds > 0, "{name} has no seeds");
    }
}

/// The token seeds reach past the signature: the harness's keys are the ones the seeds were
/// signed with, so the fuzzer starts from admitted tokens and each kind of refusal.
#[test]
fn token_seeds_reach_claims_validation() {
    use refract::auth::TokenError;
    let seed = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/token")
            .join(name);
        harness::token_verdict(&std::fs::read(path).unwrap()).unwrap()
    };
    for good in ["hs_good", "rs_good", "signed_good", "signed_kid"] {
        let claims = seed(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(claims.subject(), Some("al"), "{good}");
    }
    assert_eq!(seed("hs_expired").unwrap_err(), TokenError::Expired);
    assert_eq!(seed("signed_nbf").unwrap_err(), TokenError::NotYetValid);
    for bad in ["hs_none", "garbage", "rs_as_hs"] {
        assert_eq!(seed(bad).unwrap_err(), TokenError::Invalid, "{bad}");
    }
}
