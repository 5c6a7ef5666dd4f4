"""Search algorithms (ask/tell) and fitness. Nothing here imports torch."""

from evowatt.search.es import Candidate, EvolutionStrategy
from evowatt.search.fitness import fitness_of, rank_key

__all__ = ["Candidate", "EvolutionStrategy", "fitness_of", "rank_key"]
