//! lifeboat-sources (placeholder).
