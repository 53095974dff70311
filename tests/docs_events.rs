//! Every example in docs/events.md decodes as the event its subject expects.

use events::{EventKind, Subjects, decode};

#[test]
fn every_inbound_subject_has_a_documented_example_that_decodes() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md"))
        .expect("docs/events.md");
    let subjects = Subjects::default();
    let mut documented = Vec::new();
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("<!-- example: ") {
        rest = &rest[start + "<!-- example: ".len()..];
        let (subject, after) = rest.split_once(" -->").expect("marker closes");
        let body_start = after.find("```json\n").expect("json block follows") + 8;
        let body_end = after[body_start..].find("```").expect("block closes") + body_start;
        let json = &after[body_start..body_end];
        let (kind, event) =
            decode(json.as_bytes()).unwrap_or_else(|e| panic!("{subject}: {e}\n{json}"));
        assert_eq!(subjects.subject(kind), subject, "example type vs subject");
        assert!(uuid::Uuid::parse_str(&event.id).is_ok());
        documented.push(kind);
        rest = &after[body_end..];
    }
    for kind in EventKind::ALL.into_iter().filter(|k| k.is_inbound()) {
        assert!(
            documented.contains(&kind),
            "no example for {}",
            kind.base_subject()
        );
    }
}
