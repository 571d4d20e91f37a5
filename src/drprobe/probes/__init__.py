"""drprobe.probes."""
