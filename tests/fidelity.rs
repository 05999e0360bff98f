//! Fidelity: Microsoft's own documented requests and responses (tests/fixtures/microsoft)
//! checked against the catalogue and the typed models, and replayed to the real host.

#[path = "fidelity/actions.rs"]
mod actions;
#[path = "fidelity/corpus.rs"]
mod corpus;
#[path = "fidelity/coverage.rs"]
mod coverage;
#[path = "fidelity/parse.rs"]
mod parse;
#[path = "fidelity/replay.rs"]
mod replay;
