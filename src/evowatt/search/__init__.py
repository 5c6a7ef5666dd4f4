"""Search algorithms (ask/tell) and fitness. Nothing here imports torch."""

from evowatt.search.es import EvolutionStrategy
from evowatt.search.fitness import fitness_of, rank_key
from evowatt.search.protocol import Candidate, Evaluated, GenerationRecord, Score, Search

__all__ = [
    "Candidate",
    "Evaluated",
    "EvolutionStrategy",
    "GenerationRecord",
    "Score",
    "Search",
    "fitness_of",
    "rank_key",
]
