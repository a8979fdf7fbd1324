/**
 * How a task's text becomes a decoder generator's prompt, and an answer its completion: a template with
 * placeholders, filled in and given as it is, or as the user's message in the generator's chat template (an
 * instruction-tuned model), after an optional system message. ContextFlow (lib/rag.ts: `{context}`, `{question}`)
 * and query generation (lib/query-generation.ts: `{document}`) read their options into one.
 */
import { ColtrastError } from './errors';
import type { Generator, Prompt } from './generator';
import { booleanValue, invalid } from './validate';

export interface PromptFormat {
  /** The text, with the task's placeholders. */
  template: string;
  /** The text is the user's message in the generator's chat template (an instruction-tuned model), not a plain prompt. */
  chat: boolean;
  /** With `chat`: a system message before it. */
  system?: string;
}

/** `template` (options.template), checked to hold every one of `placeholders`. */
export function checkTemplate(template: unknown, placeholders: readonly string[]): string {
  if (typeof template !== 'string' || placeholders.some((p) => !template.includes(p))) {
    throw invalid('options.template', `a string with ${placeholders.join(' and ')}`, template);
  }
  return template;
}

/** The prompt format of `options` (template, chat, system), checked; `defaults` are the templates without one. */
export function readPromptFormat(
  o: { template?: unknown; chat?: unknown; system?: unknown },
  defaults: { plain: string; chat: string },
  placeholders: readonly string[],
): PromptFormat {
  const chat = booleanValue('options.chat', o.chat ?? false);
  if (o.system !== undefined && (typeof o.system !== 'string' || !chat)) throw invalid('options.system', 'a string, with chat: true', o.system);
  return { template: checkTemplate(o.template ?? (chat ? defaults.chat : defaults.plain), placeholders), chat, ...(o.system !== undefined && { system: o.system as string }) };
}

/** Refuses a chat format for a generator without a chat template. */
export function checkChatFormat(format: PromptFormat, generator: Generator): void {
  if (format.chat && generator.chatTemplate === undefined) {
    throw new ColtrastError('MODEL_FILES', `options.chat: ${generator.modelDir} has no chat template (tokenizer_config.json's chat_template or chat_template.jinja)`);
  }
}

/** The prompt of `text` (the template filled in): the text, or the user's message after the system's in a chat. */
export function promptOf(format: PromptFormat, text: string): Prompt {
  if (!format.chat) return text;
  return [...(format.system !== undefined ? [{ role: 'system', content: format.system }] : []), { role: 'user', content: text }];
}

/** The completion after the prompt: the answer after a space in a plain prompt, as the assistant's whole turn in a chat. */
export function formatAnswer(format: PromptFormat, answer: string): string {
  return format.chat ? answer : ` ${answer}`;
}
