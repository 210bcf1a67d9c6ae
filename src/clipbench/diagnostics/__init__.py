"""Why clipping helps or not: the gradient-noise measurement of a trained task
(:mod:`~clipbench.diagnostics.measure` takes the gradients, :mod:`~clipbench.diagnostics.noise`
reads their tails and sets clip levels from them) and the convex check where the theory says
clipping must win (:mod:`~clipbench.diagnostics.heavytail`)."""
