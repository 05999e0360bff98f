//! Integration tests: the real host over HTTP on a random port against an in-process simulator.

mod helpers;

mod actions_framework;
mod connectivity;
mod devices;
mod host;
mod secrets;
mod tokens;
