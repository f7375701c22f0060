package worldmgr

import (
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/replica"
)

// The manager owns the scene-table replica: gateways route from it and the
// CLI reads it. It is written from the loop goroutine only, and never read
// back: after a restart the table is rebuilt from scene reports.
func (m *Manager) connectBus() error {
	log := m.log
	nc, err := bus.Connect(m.cfg.NATS.ClientURL(), "worldmgr", bus.RoleWorldMgr, m.secret, log)
	if err != nil {
		return err
	}
	w, err := replica.NewWriter[modules.SceneRow](m.ctx, nc, modules.SceneTable, replica.RoleWorldMgr,
		replica.WriterOptions{Instance: "worldmgr", Logger: log})
	if err != nil {
		nc.Close()
		return err
	}
	loads, err := replica.NewReader[modules.SceneLoad](m.ctx, nc, modules.SceneLoads, replica.RoleWorldMgr,
		replica.ReaderOptions{Registerer: m.admin.Registry, Logger: log})
	if err != nil {
		w.Close()
		nc.Close()
		return err
	}
	m.nc, m.table, m.loads = nc, w, loads
	return nil
}

// publishTable puts the rows that changed since the last call.
func (m *Manager) publishTable() {
	if m.table == nil {
		return
	}
	rows := m.sup.rows()
	if m.published == nil {
		all := make(map[string]modules.SceneRow, len(rows))
		for _, r := range rows {
			all[r.ID] = r
		}
		if err := m.table.Reset(all); err != nil {
			m.log.Debug("publish scene table", zap.Error(err))
			return
		}
		m.published = all
		return
	}
	for _, r := range rows {
		if old, ok := m.published[r.ID]; ok && old == r {
			continue
		}
		if err := m.table.Put(r.ID, r); err != nil {
			// The replica resynchronises its readers after a reconnect.
			m.log.Debug("publish scene row", zap.String("scene", r.ID), zap.Error(err))
			continue
		}
		m.published[r.ID] = r
	}
}
