// Calls `refresh` now, then every `ms` while the tab is visible (hidden tabs skip a turn).

export class Poller {
  constructor(refresh, ms) {
    this.refresh = refresh;
    this.ms = ms;
    this.timer = null;
  }

  start() {
    this.stop();
    const tick = async () => {
      if (!document.hidden) await this.refresh();
      this.timer = setTimeout(tick, this.ms);
    };
    tick();
  }

  stop() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
