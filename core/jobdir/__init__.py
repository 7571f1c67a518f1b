"""The job directory: the engine's whole interface (its file names, job settings and events), standard
library only, so that the app, the runners and the engine import the same names."""
