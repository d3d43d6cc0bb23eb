"""Per-model training recipes (losses, optimizers, phases): ``<paper>.make_recipe(config)``, named by each
model's ``ModelSpec.recipe`` in ``tfinpaint.models.registry``."""
