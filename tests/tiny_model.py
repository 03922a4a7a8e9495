"""Builds a tiny random-weight Llama model with a tokenizer trained on the spot, saved as a model directory.

It goes through the same `from_pretrained` loading code users' real models do; only the weights are random.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "Hello, how can I help you today?", "Your order has shipped and will arrive in three days.",
    "Standard shipping takes three to five business days.", "You can return items within thirty days.",
    "Refunds reach your account in five to ten business days.", "Please share your order number.",
    "ご注文ありがとうございます。", "配送には三日から五日かかります。",
] * 20


def build_tiny_model(directory: Path, *, hidden_size: int = 64, layers: int = 2, heads: int = 4,
                     intermediate_size: int = 128, vocab_size: int = 400, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(directory)

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=2048, bos_token_id=fast.bos_token_id,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory
