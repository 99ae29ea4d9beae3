"""A chat app that tells spam from ham with a fine-tuned GPTLite classifier.

    GPTLITE_SPAM_MODEL=runs/spam chainlit run recipes/spam_app.py

Type a message; the app answers `spam` or `ham` with the model's probability. The model folder comes from
$GPTLITE_SPAM_MODEL (default: runs/spam, the default output_dir of recipes/finetune_spam.py).
"""

import os

import chainlit as cl

from hf_gptlite.spam.predict import DEFAULT_MODEL_ENV, ModelFolderError, classify, load_classifier

DEFAULT_MODEL_DIR = "runs/spam"
_classifier = None


def model_dir() -> str:
    return os.environ.get(DEFAULT_MODEL_ENV) or DEFAULT_MODEL_DIR


def get_classifier():
    """Load the pipeline once per server; raises ModelFolderError with instructions if the folder is missing."""
    global _classifier
    if _classifier is None:
        _classifier = load_classifier(model_dir())
    return _classifier


def answer(text: str) -> str:
    pred = classify(get_classifier(), [text])[0]
    p_spam = pred["score"] if pred["label"] == "spam" else 1.0 - pred["score"]
    return f"**{pred['label']}** (probability {pred['score']:.1%}; P(spam) = {p_spam:.3f})"


@cl.on_chat_start
async def start():
    try:
        await cl.make_async(get_classifier)()
    except ModelFolderError as e:
        await cl.Message(content=f"Model not found. {e}. Set ${DEFAULT_MODEL_ENV} to a classifier folder.").send()
        return
    await cl.Message(content=f"Spam classifier loaded from `{model_dir()}`. Type an SMS message.").send()


@cl.on_message
async def on_message(message: cl.Message):
    if not message.content.strip():
        await cl.Message(content="Empty message: type some text to classify.").send()
        return
    try:
        reply = await cl.make_async(answer)(message.content)
    except ModelFolderError as e:
        reply = f"Model not found. {e}. Set ${DEFAULT_MODEL_ENV} to a classifier folder."
    await cl.Message(content=reply).send()
