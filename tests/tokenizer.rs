//! Token ids equal transformers' `CLIPTokenizer` (what diffusers uses) on hard prompts.

use kiln_engine::tokenizer::ClipTokenizer;

use crate::common::fixture;

#[test]
fn ids_match_transformers_on_hard_prompts() {
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_cases.json")).unwrap())
            .unwrap();
    assert!(
        cases.len() >= 20,
        "need at least 20 cases, have {}",
        cases.len()
    );
    let tok = ClipTokenizer::sd15().unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let got = tok.encode(text).unwrap();
        if got != want {
            failures.push(format!(
                "{text:?}: got {:?}, want {:?}",
                &got[..12],
                &want[..12]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} prompts differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
