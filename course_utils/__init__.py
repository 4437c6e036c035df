"""course_utils: the companion package of the course "From an empty folder to your own LLM product".

One module per topic; each module's docstring names the notebook that teaches it.
Importing the package is cheap: nothing heavy (torch, transformers) is imported until
a submodule that needs it is imported. Layers (nothing imports upwards):

- entry points: ``cli`` (the ``course`` command), ``runbook`` (executes notebooks)
- stages: ``pretrain``, ``sft``, ``lora``, ``dpo``, ``prep``, ``rag``, ``evaluation`` ...
- core: ``settings``, ``artifacts``, ``envcheck``, ``data``, ``tokenizer``, ``model``, ``hf``, ``plots``
"""

__version__ = "0.1.0"
