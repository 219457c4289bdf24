"""pytest plugin for mutation runs: Hypothesis without its shrink phase.

A killed mutant needs one failing example, not the smallest one, and shrinking reruns the test
dozens of times per killed mutant. Load it with ``-p hypothesis_noshrink`` and this directory on
``PYTHONPATH`` (see the mutation-testing section of the README)::

    PYTHONPATH=$PWD/scripts scripts/mutation-test.sh MODULE -- -p hypothesis_noshrink TESTS
"""

from hypothesis import Phase, settings

settings.register_profile("mutation_noshrink", phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.load_profile("mutation_noshrink")
