// The microphone's samples, as 16-bit PCM messages of about 20 ms, to the page's WebSocket.
class PcmSender extends AudioWorkletProcessor {
  constructor() {
    super();
    this.buffer = new Int16Array(Math.round(sampleRate * 0.02));
    this.filled = 0;
  }
  process(inputs) {
    const input = inputs[0];
    if (input.length) {
      const mono = input[0];
      for (let i = 0; i < mono.length; i++) {
        const s = Math.max(-1, Math.min(1, mono[i]));
        this.buffer[this.filled++] = s < 0 ? s * 32768 : s * 32767;
        if (this.filled === this.buffer.length) {
          this.port.postMessage(this.buffer.slice().buffer, []);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("pcm-sender", PcmSender);
