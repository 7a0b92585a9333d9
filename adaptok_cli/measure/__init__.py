"""Looking at results: what a container holds (report, manifest, pictures), whether it is intact (verify),
and what dropping and LIT cost and earn (evaluate, metrics)."""
