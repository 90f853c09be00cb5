//! `knit ingress`: an HTTP router in front of knit's sandboxes and services, configured
//! with Skipper's route language (eskip).
//!
//! - `eskip`: the route language's lexer and parser (text to `eskip::Route`s);
pub mod eskip;
