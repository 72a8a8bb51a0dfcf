"""flamewatch."""
