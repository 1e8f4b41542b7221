"""castway's benchmarks (``castway bench ...``): each runs castway side by side with what a
user would pick instead and prints the ratio (BENCHMARKS.md). Not part of the product: the
product packages never import this one; ``pip install castway[bench]`` adds what it needs."""
