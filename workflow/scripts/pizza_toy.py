import sys

from gptlab.experiments.pizza import default_sweep_temperatures, write_pizza_book, write_pizza_sweep

sm = snakemake
p = sm.params
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

common = dict(num_draws=p.num_draws, seed=p.seed, confidence=p.confidence, interval=p.interval)
write_pizza_book(sm.output.book, temperatures=p.temperatures, **common)
write_pizza_sweep(sm.output.sweep, temperatures=default_sweep_temperatures(p.sweep_points), **common)
