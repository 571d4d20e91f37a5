"""drprobe.sources.builtin."""
