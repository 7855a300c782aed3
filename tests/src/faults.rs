//! Fault injection for the integration tests (private broker and Redis instances).
