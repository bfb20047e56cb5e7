"""The local fleet (issue 14, point 5): real Tritons started with a rendered Deployment's args, behind a
readiness-aware router, rolled by a harness that plays the Deployment controller. Test harness, not product."""
