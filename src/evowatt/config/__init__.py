"""Run configuration: the typed, validated config and the ENERGIZE import."""
