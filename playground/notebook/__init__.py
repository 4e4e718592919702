"""The playground in a notebook: open a model, generate, look at the tokens, attention and inside one prediction.

    from playground.notebook import open_model
    model = open_model("demo")
    run = model.generate("Once upon a time", num_return_sequences=3, temperature=0.8, top_k=40, max_new_tokens=30)
    run                       # the token view: colours, and a card per token on hover
    run.to_dataframe()        # one row per token
    run.attention()           # every layer's and head's attention
    run.inside().at(6)        # logit lens, sampling funnel and residual stream of one prediction

The same objects as the app's (playground.service.Playground, GenerationResult, analysis.inside.Inside); the views
draw with no network (their CSS and JavaScript are inlined from the package), in English or Chinese (lang="zh-CN").
"""

from .export import export_html
from .page import View, default_language
from .run import InsideView, Run
from .session import Model, open_model, open_run
from .views import AttentionView, LensGridView, PredictionView, TokensView

__all__ = ["AttentionView", "InsideView", "LensGridView", "Model", "PredictionView", "Run", "TokensView", "View",
           "default_language", "export_html", "open_model", "open_run"]
