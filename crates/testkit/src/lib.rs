//! lifeboat-testkit (placeholder).
