"""Rule-based planning: fingerprint -> Plans (configurations, patch/batch size, network topology)."""
