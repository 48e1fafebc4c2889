"""The choices minsd offers, one list each, for the code, the command line and docs.

Kept free of torch, so that `python -m minsd --help` answers without loading it.
"""

# Noise schedules, see scheduler.get_sigmas: three ways of spacing SD's training
# timesteps, and Karras et al.'s rho = 7 spacing between sigma_min and sigma_max.
SPACINGS = ("linspace", "leading", "trailing", "karras")

# Samplers that StableDiffusion.generate and the command line run (scheduler.py holds
# them all; each name here needs its branch in generate, and tests/test_pipeline.py runs
# each). sample_heun_churn (Karras et al. 2022, Algorithm 2) is not among them: its four
# parameters (s_churn, s_tmin, s_tmax, s_noise) must be tuned per model and none are
# published for SD; call it directly, as the chapter "Beyond Euler" does.
SAMPLERS = ("euler", "heun", "dpmpp_2m", "euler_ancestral")

# The environment variable that names the weights when none are passed (load_pipeline,
# the command line, the book's setup).
WEIGHTS_ENV = "MINSD_WEIGHTS"
